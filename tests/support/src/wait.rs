//! Waiting on events with a deadline, never on a fixed sleep.

use std::time::Duration;

/// Polls `check` until it returns Some, or panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (bound and released) for servers that cannot report theirs.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free port below Linux's ephemeral range (32768 and up), for a server
/// the test stops and starts again on the same port while clients keep
/// reconnecting to it. In that range a client's own outgoing connection can
/// take the port meanwhile (by TCP simultaneous open it even connects to
/// itself on it), and the restart then fails with "Address already in use".
pub fn port_below_ephemeral() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(shared::now_ms() as u128);
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, what: &str) {
    wait_for(what, Duration::from_secs(20), || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ()) }).await
}
