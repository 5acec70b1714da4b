//! What the agent's binary tests share: running the real binary and asking
//! its status endpoint.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_citysense-agent");

/// A child process killed when the test lets go of it, passing or failing.
pub struct Running(pub Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `citysense-agent status --json` against the agent on `port`.
pub fn status(port: u16) -> Option<serde_json::Value> {
    let out = Command::new(BIN).args(["status", "--json", "--addr", &format!("127.0.0.1:{port}")]).output().ok()?;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

pub async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = tokio::task::block_in_place(&mut f) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
