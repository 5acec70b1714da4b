//! A real `citysense-agent run` whose config file a test rewrites and
//! reloads with SIGHUP, as a technician at the cabinet does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{get_json, Child};

pub struct ReloadingAgent {
    /// The file the agent runs from.
    pub config: PathBuf,
    child: Child,
}

impl ReloadingAgent {
    /// Writes `text` to `dir/agent.toml` and runs the agent binary on it.
    pub fn start(dir: &Path, text: &str) -> ReloadingAgent {
        let config = dir.join("agent.toml");
        std::fs::write(&config, text).unwrap();
        let child = Command::new(super::bin("citysense-agent")).args(["run", "--config"]).arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        ReloadingAgent { config, child: Child(child) }
    }

    /// Puts `text` in the config file and sends SIGHUP. Only once the agent
    /// was heard from: before `run` handles SIGHUP, the signal would end it.
    pub fn reload(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
        self.signal("-HUP");
    }

    /// SIGTERM, and waits for the agent to flush and exit.
    pub fn stop(mut self) {
        self.signal("-TERM");
        let _ = self.child.0.wait();
    }

    fn signal(&self, which: &str) {
        assert!(Command::new("kill").args([which, &self.child.0.id().to_string()]).status().unwrap().success(), "kill {which}");
    }
}

/// One gateway of `/api/v1/gateways`, or null.
pub async fn gateway_view(http: std::net::SocketAddr, id: &str) -> Value {
    let all = get_json(http, "/api/v1/gateways").await;
    all.as_array().unwrap().iter().find(|g| g["id"] == id).cloned().unwrap_or(Value::Null)
}
