//! A TCP relay that makes loopback look like a wide-area link, for the latency benchmark:
//! every chunk is delivered half a round-trip time after it was sent, in each direction and in
//! order, and optionally no faster than a given pace (bytes per second). TLS passes through
//! untouched. Connections and bytes are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Default)]
struct Link {
    /// Round-trip time in microseconds (each direction gets half).
    rtt_micros: AtomicU64,
    /// Bytes per second in each direction; 0: unlimited.
    pace: AtomicU64,
    connections: AtomicU64,
    bytes_down: AtomicU64,
    /// Plain HTTP/1.1 requests seen going up (request lines; TLS is opaque).
    requests: AtomicU64,
}

pub struct Relay {
    pub addr: String,
    link: Arc<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let link = Arc::new(Link::default());
        let upstream = upstream.to_string();
        let task = {
            let link = link.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    link.connections.fetch_add(1, Ordering::SeqCst);
                    let link = link.clone();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        // The connection itself takes a round trip (SYN, SYN-ACK).
                        tokio::time::sleep(link.rtt()).await;
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        let up = tokio::spawn(pipe(client_read, server_write, link.clone(), false));
                        pipe(server_read, client_write, link, true).await;
                        up.abort();
                    });
                }
            })
        };
        Relay { addr, link, task }
    }

    /// Set the round-trip time and the pace (bytes per second, None: unlimited).
    pub fn set(&self, rtt: Duration, pace: Option<u64>) {
        self.link
            .rtt_micros
            .store(rtt.as_micros() as u64, Ordering::SeqCst);
        self.link.pace.store(pace.unwrap_or(0), Ordering::SeqCst);
    }

    pub fn connections(&self) -> u64 {
        self.link.connections.load(Ordering::SeqCst)
    }

    /// Plain HTTP requests relayed to the server (0 for TLS).
    pub fn requests(&self) -> u64 {
        self.link.requests.load(Ordering::SeqCst)
    }

    /// Bytes relayed from the server to the client.
    pub fn bytes_down(&self) -> u64 {
        self.link.bytes_down.load(Ordering::SeqCst)
    }
}

impl Link {
    fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_micros.load(Ordering::SeqCst))
    }
}

/// Read chunks from one side and deliver each half an RTT later (and at the pace) to the other.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: Arc<Link>, down: bool) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = {
        let link = link.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            // The end of the last chunk, so a request line split across reads is still seen.
            let mut tail: Vec<u8> = Vec::new();
            const LINE_END: &[u8] = b" HTTP/1.1\r\n";
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if !down {
                    tail.extend_from_slice(&buf[..n]);
                    let seen = tail
                        .windows(LINE_END.len())
                        .filter(|w| *w == LINE_END)
                        .count();
                    link.requests.fetch_add(seen as u64, Ordering::SeqCst);
                    let keep = tail.len().min(LINE_END.len() - 1);
                    tail.drain(..tail.len() - keep);
                }
                let due = Instant::now() + link.rtt() / 2;
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        })
    };
    // When the link is free again at the pace.
    let mut free_at = Instant::now();
    while let Some((due, chunk)) = rx.recv().await {
        let pace = link.pace.load(Ordering::SeqCst);
        let mut at = due;
        if pace > 0 {
            let start = free_at.max(Instant::now());
            free_at = start + Duration::from_secs_f64(chunk.len() as f64 / pace as f64);
            at = at.max(free_at);
        }
        tokio::time::sleep_until(at).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
        if down {
            link.bytes_down
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}
