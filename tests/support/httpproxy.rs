//! A forward HTTP proxy for the tests: CONNECT tunnels (HTTPS) and absolute-form requests (plain
//! HTTP), recording every target it was asked for.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub struct HttpProxy {
    pub url: String,
    targets: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, targets: Arc<Mutex<Vec<String>>>) {
    let Some(head) = super::read_http_head(&mut client).await else {
        return;
    };
    let text = String::from_utf8_lossy(&head).to_string();
    let mut words = text.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let (authority, tunnel) = if method == "CONNECT" {
        (target.to_string(), true)
    } else {
        // http://host:port/path
        let rest = target.strip_prefix("http://").unwrap_or(target);
        (
            rest.split('/').next().unwrap_or_default().to_string(),
            false,
        )
    };
    targets.lock().unwrap().push(authority.clone());
    let Ok(mut upstream) = TcpStream::connect(&authority).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if tunnel {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    } else if upstream.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

impl HttpProxy {
    pub async fn start() -> HttpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let targets = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let targets = targets.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, targets.clone()));
                }
            })
        };
        HttpProxy { url, targets, task }
    }

    /// Every `host:port` the proxy was asked to reach.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}
