//! A TCP proxy in front of a test registry that counts the bytes it delivers and injects
//! faults: refused connections, 429/503 answers, and connections cut mid-response.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accept, then close without a word.
    Close,
    /// Answer the first request with this HTTP status, then close.
    Status(u16),
    /// Relay, but cut the connection once this many bytes went to the client.
    CutAfter(u64),
}

#[derive(Default)]
struct State {
    bytes_down: AtomicU64,
    connections: AtomicU64,
    faults: Mutex<VecDeque<Fault>>,
    /// Applied to every connection while set (persistent outage).
    always: Mutex<Option<Fault>>,
}

pub struct FaultProxy {
    pub addr: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State::default());
        let upstream = upstream.to_string();
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    state.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(client, upstream.clone(), state.clone()));
                }
            })
        };
        FaultProxy { addr, state, task }
    }

    /// Bytes relayed from the registry to the client so far.
    pub fn bytes_down(&self) -> u64 {
        self.state.bytes_down.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Faults for the next connections, one each, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.faults.lock().unwrap().extend(faults);
    }

    pub fn pending_faults(&self) -> usize {
        self.state.faults.lock().unwrap().len()
    }

    pub fn fail_always(&self, fault: Option<Fault>) {
        *self.state.always.lock().unwrap() = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next fault, for plain-HTTP connections only: a TLS handshake (an insecure-registry
/// probe) is relayed untouched, so faults land on the requests a test means.
async fn next_fault(client: &TcpStream, state: &State) -> Option<Fault> {
    let mut first = [0u8; 1];
    let is_tls = matches!(client.peek(&mut first).await, Ok(1) if first[0] == 0x16);
    if is_tls {
        return None;
    }
    let queued = state.faults.lock().unwrap().pop_front();
    queued.or(*state.always.lock().unwrap())
}

async fn serve(mut client: TcpStream, upstream: String, state: Arc<State>) {
    let fault = next_fault(&client, &state).await;
    match fault {
        Some(Fault::Close) => return,
        Some(Fault::Status(code)) => {
            if super::read_http_head(&mut client).await.is_some() {
                let reason = if code == 429 {
                    "Too Many Requests"
                } else {
                    "Service Unavailable"
                };
                let _ = client
                    .write_all(
                        format!(
                            "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
            return;
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let cut_after = match fault {
        Some(Fault::CutAfter(n)) => Some(n),
        _ => None,
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut relayed = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut_after {
            Some(limit) if relayed + n as u64 > limit => (limit - relayed) as usize,
            _ => n,
        };
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        relayed += n as u64;
        state.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
        if cut_after.is_some_and(|limit| relayed >= limit) {
            break;
        }
    }
    up.abort();
}
