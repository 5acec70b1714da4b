//! Helpers of the whole-system tests beyond `citysense-test-support`: agents
//! configured against the simulated city, and the workspace's binaries.

#![allow(dead_code)]

pub mod browser;
pub mod credentials;
pub mod pki;
pub mod raw_mqtt;
pub mod reloading;

use std::path::{Path, PathBuf};

pub use support::*;

/// An agent config reading `modbus` devices (and noise over MQTT when `noise_broker`).
pub fn agent_config(dir: &Path, gateway: &str, broker: &str, modbus: &str, noise_broker: Option<&str>) -> agent::config::AgentConfig {
    let text = agent_toml(dir, gateway, broker, modbus, noise_broker);
    shared::config::parse("test agent", &text, dir).unwrap_or_else(|d| panic!("{d}\n{text}"))
}

/// The text of `agent_config`, for an agent binary to read from a file.
pub fn agent_toml(dir: &Path, gateway: &str, broker: &str, modbus: &str, noise_broker: Option<&str>) -> String {
    // A TOML list (a broker cluster's nodes) goes in as written.
    let broker = if broker.starts_with('[') { broker.to_string() } else { format!("\"{broker}\"") };
    let mut text = format!(
        "gateway = \"{gateway}\"\n[uplink]\nbroker = {broker}\nbatch_max = 200\nlinger = \"50ms\"\nhealth_interval = \"500ms\"\nack_timeout = \"3s\"\n[buffer]\npath = \"{}\"\nflush = \"50ms\"\n[status]\nlisten = \"127.0.0.1:0\"\n\n{modbus}",
        dir.join(format!("agent-{gateway}")).display()
    );
    if let Some(b) = noise_broker {
        text.push_str(&sim::run::noise_toml(b));
    }
    text
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of the workspace, built beside this test (`cargo test --workspace` builds them all).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe.parent().and_then(Path::parent).map(|d| d.join(name)).unwrap();
    assert!(path.is_file(), "{} not built: run the suite with `cargo test --workspace` (./tests/run)", path.display());
    path
}
