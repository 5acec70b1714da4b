//! `citysense-sim` on its own: the manifest it prints and the agent sources it writes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_simulator_prints_its_devices_and_writes_agent_sources() {
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources.toml");
    let log = dir.path().join("counter.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_citysense-sim"))
        .args(["--air", "1", "--traffic", "1", "--water", "0", "--noise", "0", "--only-counter", "--write-sources"])
        .arg(&sources)
        .arg("--counter-log")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["sensor"], "aq-001");
    assert!(first["modbus"].as_str().unwrap().starts_with("tcp://127.0.0.1:"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sources.exists() {
        assert!(Instant::now() < deadline, "sources file not written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&sources).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(text.matches("[[modbus]]").count(), 2, "{text}");
    assert_eq!(text.matches("[[modbus.point]]").count(), 2, "only the counters: {text}");
    assert!(text.contains("metric = \"counter\"") && !text.contains("pm25"), "{text}");
}
