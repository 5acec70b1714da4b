//! SIGHUP reloads the config without losing buffered readings; a broken
//! config on reload is refused and the agent runs on as it was.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, status, wait_for, Running, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_sources_and_keeps_the_outbox() {
    let city = sim::RunningCity::start(sim::City { air: 2, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // An unreachable uplink: everything stays in the outbox, so nothing can hide a loss.
    let head = format!(
        "gateway = \"gw-reload\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:9\"\n[buffer]\npath = \"{}\"\nflush = \"50ms\"\n[status]\nlisten = \"127.0.0.1:{port}\"\n\n",
        dir.path().join("outbox").display()
    );
    let one = sim::run::modbus_toml(&[&city.devices[0]], Duration::from_millis(200));
    let both = sim::run::modbus_toml(&[&city.devices[0], &city.devices[1]], Duration::from_millis(200));
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, format!("{head}{one}")).unwrap();
    let log = dir.path().join("agent.log");
    let child = Command::new(BIN).args(["run", "--config"]).arg(&cfg).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let pid = child.id().to_string();
    let mut agent = Running(child);

    let before = wait_for("readings in the outbox", || status(port).filter(|s| s["buffer_depth"].as_u64() >= Some(30))).await;
    assert_eq!(before["devices"].as_array().unwrap().len(), 1);

    std::fs::write(&cfg, format!("{head}{both}")).unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let after = wait_for("both devices polled after reload", || {
        status(port).filter(|s| s["devices"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|x| x["polls"].as_u64() > Some(0))))
    })
    .await;
    let (d0, n0) = (before["buffer_depth"].as_u64().unwrap(), before["next_seq"].as_u64().unwrap());
    let (d1, n1) = (after["buffer_depth"].as_u64().unwrap(), after["next_seq"].as_u64().unwrap());
    assert!(n1 > n0 && d1 >= d0, "seqs go on and nothing buffered is lost: before {before}, after {after}");
    assert_eq!(d1, n1 - 1, "every seq ever given is still in the outbox");

    // A broken config on SIGHUP: refused, and the agent keeps polling both devices.
    std::fs::write(&cfg, format!("{head}{both}").replace("unit = 1", "unit = \"one\"")).unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let depth = after["buffer_depth"].as_u64().unwrap();
    let still = wait_for("polling to go on after a refused reload", || status(port).filter(|s| s["buffer_depth"].as_u64() > Some(depth + 20))).await;
    assert_eq!(still["devices"].as_array().unwrap().len(), 2);
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = agent.0.wait().unwrap();
    assert!(out.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("reload refused") && err.contains("agent.toml:"), "{err}");
}
