//! A Server-Sent Events subscription read line by line off the socket.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A Server-Sent Events subscription: yields (event, data) pairs.
pub struct SseClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl SseClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> SseClient {
        use tokio::io::AsyncBufReadExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await.unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        // Skip the response head.
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.is_empty() {
                break;
            }
        }
        SseClient { lines }
    }

    /// The next event whose data satisfies `pick`, within `limit`.
    pub async fn next_where(&mut self, event: &str, limit: Duration, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        let mut name = String::new();
        loop {
            let line =
                tokio::time::timeout_at(deadline, self.lines.next_line()).await.unwrap_or_else(|_| panic!("no `{event}` event within {limit:?}")).unwrap().expect("stream open");
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                if name == event {
                    let v: Value = serde_json::from_str(d.trim()).unwrap();
                    if pick(&v) {
                        return v;
                    }
                }
            }
        }
    }

    /// Every `event` until the stream has been quiet for `quiet`; `lagged`
    /// (events the collector skipped for this client) fails the caller.
    pub async fn until_quiet(&mut self, event: &str, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        let mut name = String::new();
        while let Ok(line) = tokio::time::timeout(quiet, self.lines.next_line()).await {
            let line = line.unwrap().expect("stream open");
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                assert_ne!(name, "lagged", "the stream skipped events: {d}");
                if name == event {
                    out.push(serde_json::from_str(d.trim()).unwrap());
                }
            }
        }
        out
    }
}
