//! `citysense-agent test` against the simulator: every reading printed as it
//! would be sent (exact decimals, raw registers beside), a datasheet-numbered
//! config, a silent device failing the run, and no outbox touched.

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_citysense-agent");

fn run_test(config: &str) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("gateway = \"gw-test\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:9\"\n[buffer]\npath = \"{}\"\n\n{config}", dir.path().join("outbox").display());
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN).args(["test", "--seconds", "1", "--config"]).arg(&file).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_prints_each_reading_with_its_registers_and_fails_on_a_silent_device() {
    let city = sim::RunningCity::start(sim::City { air: 2, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    city.control.force("aq-001", "pm25", 35.7);
    city.control.force("aq-001", "temperature_c", -5.3);
    city.control.force("aq-001", "humidity_pct", 87.6);
    let toml = sim::run::modbus_toml(&[&city.devices[0]], Duration::from_secs(1));
    let (code, out, dir) = tokio::task::spawn_blocking(move || run_test(&toml)).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("aq-001 (tcp://") && out.contains(": OK,"), "{out}");
    // Exact decimals: not 35.70000076293945, -5.300000000000001, 87.60000000000001.
    for (metric, value) in [("pm25", "35.7 ug/m3"), ("temperature_c", "-5.3 degC"), ("humidity_pct", "87.6 %")] {
        let line = out.lines().find(|l| l.contains(&format!(" {metric} "))).unwrap_or_else(|| panic!("{metric}: {out}"));
        assert!(line.contains(&format!("= {value} ")) && line.contains("good") && line.contains("holding"), "{line}");
    }
    assert!(out.contains("= 0xFFCB"), "-53 as the raw register: {out}");
    assert!(!dir.path().join("outbox").exists(), "test must not open the outbox");

    // The same device written the datasheet's way, with a plausible range the value misses.
    let port = city.devices[0].addr.port();
    let datasheet = format!(
        "[[modbus]]\nsensor = \"aq-001\"\naddress = \"tcp://127.0.0.1:{port}\"\n  [[modbus.point]]\n  metric = \"pm25\"\n  address = \"40001-40002\"\n  type = \"f32\"\n  order = \"ABCD\"\n  [[modbus.point]]\n  metric = \"temperature_c\"\n  ref = 40007\n  type = \"i16\"\n  scale = 0.1\n  range = [0, 50]\n"
    );
    let (code, out, _dir) = tokio::task::spawn_blocking(move || run_test(&datasheet)).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.contains(" pm25 ") && l.contains("= 35.7 ") && l.contains("holding 0..1")), "{out}");
    assert!(out.lines().any(|l| l.contains(" temperature_c ") && l.contains("uncertain") && l.contains("outside range [0, 50]")), "{out}");

    city.control.set_silent("aq-002", true);
    let both = sim::run::modbus_toml(&[&city.devices[0], &city.devices[1]], Duration::from_secs(1));
    let (code, out, _dir) = tokio::task::spawn_blocking(move || run_test(&both)).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("aq-002 (tcp://") && out.contains("FAILED") && out.contains("1 of 2 device(s) and source(s) OK"), "{out}");
}
