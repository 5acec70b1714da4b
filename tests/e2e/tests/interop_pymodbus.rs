//! The agent reads an independent Modbus implementation (pymodbus) and the
//! collector stores the values it decoded.

mod common;

use std::time::Duration;

use common::*;

const POINTS: &str = r#"
[[modbus]]
sensor = "py-001"
address = "tcp://127.0.0.1:PORT"
unit = 1
interval = "500ms"
timeout = "500ms"
retries = 1
  [[modbus.point]]
  metric = "f_abcd"
  table = "holding"
  address = 0
  type = "f32"
  order = "ABCD"
  [[modbus.point]]
  metric = "f_cdab"
  table = "holding"
  address = 2
  type = "f32"
  order = "CDAB"
  [[modbus.point]]
  metric = "f_badc"
  table = "holding"
  address = 4
  type = "f32"
  order = "BADC"
  [[modbus.point]]
  metric = "f_dcba"
  table = "holding"
  address = 6
  type = "f32"
  order = "DCBA"
  [[modbus.point]]
  metric = "i16"
  table = "holding"
  address = 8
  type = "i16"
  [[modbus.point]]
  metric = "u32_cdab"
  table = "holding"
  address = 10
  type = "u32"
  order = "CDAB"
  [[modbus.point]]
  metric = "f64"
  table = "holding"
  address = 12
  type = "f64"
  [[modbus.point]]
  metric = "temperature_c"
  table = "holding"
  address = 20
  type = "u16"
  scale = 0.1
  [[modbus.point]]
  metric = "in_u16"
  table = "input"
  address = 0
  type = "u16"
  [[modbus.point]]
  metric = "in_i32"
  table = "input"
  address = 1
  type = "i32"
  [[modbus.point]]
  metric = "coil_on"
  table = "coil"
  address = 0
  type = "bool"
  [[modbus.point]]
  metric = "coil_off"
  table = "coil"
  address = 1
  type = "bool"
  [[modbus.point]]
  metric = "di_on"
  table = "discrete"
  address = 0
  type = "bool"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_decodes_a_pymodbus_server_correctly() {
    let script = workspace().join("tests/interop/pymodbus_server.py");
    let port = free_port();
    let _server = Child(std::process::Command::new("python3").arg(script).arg(port.to_string()).spawn().expect("python3 runs the pymodbus server (./tests/run installs pymodbus)"));
    wait_for_port(port, "the pymodbus server (is pymodbus installed? ./tests/run installs it)").await;

    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, "").await;
    let cfg = agent_config(dir.path(), "gw-py", &c.mqtt_url, &POINTS.replace("PORT", &port.to_string()), None);
    let agent = agent::Agent::start(cfg).await.unwrap();

    let expected: [(&str, f64, f64); 13] = [
        ("f_abcd", 123.456, 1e-4),
        ("f_cdab", 123.456, 1e-4),
        ("f_badc", 123.456, 1e-4),
        ("f_dcba", 123.456, 1e-4),
        ("i16", -123.0, 0.0),
        ("u32_cdab", 305_419_896.0, 0.0),
        ("f64", 1.5, 0.0),
        ("temperature_c", 21.5, 1e-9),
        ("in_u16", 4242.0, 0.0),
        ("in_i32", -2.0, 0.0),
        ("coil_on", 1.0, 0.0),
        ("coil_off", 0.0, 0.0),
        ("di_on", 1.0, 0.0),
    ];
    for (metric, value, tol) in expected {
        let got = wait_for(&format!("py-001/{metric}"), Duration::from_secs(30), || async move { latest(c.http_addr, "py-001", metric).await }).await;
        assert!((got - value).abs() <= tol, "{metric}: got {got}, expected {value}");
    }
    assert_eq!(agent.devices[0].errors(), 0, "{:?}", agent.devices[0].snapshot());
    agent.shutdown().await;
    c.shutdown().await;
}
