//! HTTP/1.0 by hand over a TCP stream: the test sees exactly what the server
//! sent, and a request that is never answered fails naming itself.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a request in a test may wait for the server's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// One request; the status and body, or the I/O error. The bench's form: it
/// reports failures instead of panicking.
pub async fn try_request(addr: SocketAddr, method: &str, path: &str, body: &str, headers: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = if method == "GET" {
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n")
    } else {
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer to {method} {path} within {ANSWER_WITHIN:?}")))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_string()))
}

pub async fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    try_request(addr, "GET", path, "", "").await
}

/// `headers`: extra header lines, each ending in CRLF.
pub async fn request_with(addr: SocketAddr, method: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
    try_request(addr, method, path, body, headers).await.unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// GET `path`; returns status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request_with(addr, "GET", path, "", "").await
}

pub async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// POST a JSON body; returns status and body.
pub async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    request(addr, "POST", path, body).await
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    request_with(addr, method, path, body, "").await
}

/// A request with a bearer token (none when empty).
pub async fn request_as(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let auth = if token.is_empty() { String::new() } else { format!("Authorization: Bearer {token}\r\n") };
    request_with(addr, method, path, body, &auth).await
}

/// The value of an unlabelled Prometheus counter or gauge in exposition text.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// The partitions of the batch log a collector holds, from its `/metrics` text
/// (`citysense_cluster_partition_held{partition="p"}`), in order.
pub fn partitions_held(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.strip_prefix("citysense_cluster_partition_held{partition=\"")?.split('"').next()?.parse().ok()).collect()
}

/// The value of an unlabelled counter in the server's `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = get(addr, "/metrics").await;
    metric_in(&body, name).unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}
