//! `citysense-agent test` against the simulator: every reading printed as it
//! would be sent (exact decimals, raw registers beside), a datasheet-numbered
//! config, a silent device failing the run, and no outbox touched.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, Mosquitto, BIN};

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

/// pymodbus serving `tests/interop/pymodbus_datasheet.py`; killed on drop.
struct Datasheet {
    child: std::process::Child,
    port: u16,
}
impl Datasheet {
    fn start() -> Datasheet {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/pymodbus_datasheet.py");
        let child = Command::new("python3").arg(script).arg(port.to_string()).spawn().expect("python3 with pymodbus (./tests/run installs it)");
        let server = Datasheet { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the pymodbus server did not start (is pymodbus installed? ./tests/run installs it)");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}
impl Drop for Datasheet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The station's datasheet table written as a technician copies it: Modicon
/// numbers, ranges and single references, no 0-based arithmetic.
fn datasheet_device(sensor: &str, port: u16) -> String {
    format!(
        r#"
[[modbus]]
sensor = "{sensor}"
address = "tcp://127.0.0.1:{port}"
timeout = "500ms"
retries = 0
  [[modbus.point]]
  metric = "pm25"
  address = "40101-40102"
  type = "f32"
  order = "CDAB"
  unit = "ug/m3"
  [[modbus.point]]
  metric = "temperature_c"
  ref = 40103
  type = "i16"
  scale = 0.1
  range = [-40, 80]
  unit = "degC"
  [[modbus.point]]
  metric = "humidity_pct"
  ref = 40104
  scale = 0.1
  unit = "%"
  [[modbus.point]]
  metric = "fault"
  ref = 40105
  type = "bit"
  bit = 0
  [[modbus.point]]
  metric = "heater"
  ref = 40105
  type = "bit"
  bit = 1
  [[modbus.point]]
  metric = "mode"
  ref = "40105"
  type = "bits"
  bits = [4, 7]
  [[modbus.point]]
  metric = "counter"
  ref = "30001-30002"
  type = "u32"
"#
    )
}

/// The printed row of `sensor`'s `metric`, split on whitespace.
fn row<'a>(out: &'a str, sensor: &str, metric: &str) -> Vec<&'a str> {
    let line = out.lines().find(|l| l.split_whitespace().take(2).eq([sensor, metric])).unwrap_or_else(|| panic!("no row for {sensor} {metric}: {out}"));
    line.split_whitespace().collect()
}

#[test]
fn a_pymodbus_station_configured_from_its_datasheet_reads_exactly_what_the_datasheet_says() {
    let mut station = Datasheet::start();
    let config = datasheet_device("aq-101", station.port);
    let (code, out, dir) = run_test(&config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("aq-101 (tcp://127.0.0.1:{} unit 1): OK, 2 request(s)", station.port)), "one holding and one input request: {out}");
    // Every row exactly, token by token: value as the datasheet means it
    // (35.7, not 35.70000076293945; -5.3 and 87.6 without float noise),
    // quality, and the registers it came from.
    let expected: [(&str, &[&str]); 7] = [
        ("pm25", &["=", "35.7", "ug/m3", "good", "holding", "100..101", "=", "0xCCCD", "0x420E"]),
        ("temperature_c", &["=", "-5.3", "degC", "good", "holding", "102", "=", "0xFFCB"]),
        ("humidity_pct", &["=", "87.6", "%", "good", "holding", "103", "=", "0x036C"]),
        ("fault", &["=", "1", "good", "holding", "104", "bit", "0", "=", "0x0051"]),
        ("heater", &["=", "0", "good", "holding", "104", "bit", "1", "=", "0x0051"]),
        ("mode", &["=", "5", "good", "holding", "104", "bits", "4..=7", "=", "0x0051"]),
        ("counter", &["=", "123456789", "good", "input", "0..1", "=", "0x075B", "0xCD15"]),
    ];
    for (metric, rest) in expected {
        assert_eq!(&row(&out, "aq-101", metric)[2..], rest, "{metric}: {out}");
    }
    assert!(!dir.path().join("outbox").exists(), "test must not open the outbox");

    // probe reads the same register in the datasheet's numbering: the CDAB column holds 35.7.
    let probe = Command::new(BIN)
        .args(["probe", "modbus", &format!("127.0.0.1:{}", station.port), "--start", "40101", "--count", "2", "--type", "f32", "--order", "CDAB"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    let header: Vec<&str> = text.lines().find(|l| l.contains("CDAB*")).unwrap_or_else(|| panic!("CDAB marked as expected: {text}")).split_whitespace().collect();
    // `addr  f32 ABCD  f32 CDAB* …`: value columns are the pairs after `addr`.
    let column = header[1..].chunks(2).position(|c| c[1] == "CDAB*").unwrap();
    let values: Vec<&str> =
        text.lines().skip_while(|l| !l.contains("CDAB*")).find(|l| l.split_whitespace().next() == Some("100")).unwrap_or_else(|| panic!("{text}")).split_whitespace().collect();
    assert_eq!(values[1 + column], "35.7", "the f32 as test prints it: {text}");

    // A device on a dead port and a point past the device's map: the run
    // fails, naming each device with its cause, and the good device still reads.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let wrong = datasheet_device("aq-102", station.port).replace("ref = 40104", "ref = 40501");
    let three = format!("{config}{}{wrong}", datasheet_device("aq-dead", dead));
    let (code, out, _dir) = run_test(&three);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("aq-dead (tcp://127.0.0.1:{dead} unit 1): FAILED, 2 of 2 request(s) failed")), "{out}");
    assert!(out.contains(&format!("  error: tcp://127.0.0.1:{dead} unit 1 holding 100+5: cannot connect: Connection refused")), "{out}");
    assert!(out.contains(&format!("aq-102 (tcp://127.0.0.1:{} unit 1): FAILED, 1 of 4 request(s) failed", station.port)), "{out}");
    assert!(out.contains(&format!("  error: tcp://127.0.0.1:{} unit 1 holding 500+1: Modbus exception 2 (illegal data address)", station.port)), "{out}");
    assert!(out.contains("1 of 3 device(s) and source(s) OK"), "{out}");
    assert_eq!(row(&out, "aq-101", "humidity_pct")[3], "87.6", "{out}");

    // The station switched off: the same config that passed now fails, naming it.
    let _ = station.child.kill();
    let _ = station.child.wait();
    let (code, out, _dir) = run_test(&config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("aq-101 (tcp://127.0.0.1:{} unit 1): FAILED", station.port)) && out.contains("0 of 1 device(s) and source(s) OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_listens_to_mqtt_sources_and_shows_the_time_each_reading_takes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), free_port());
    // Retained, so `test` hears them as it subscribes: one stamped with an
    // offset, one without a zone (the default rule refuses it).
    let (client, mut events) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("commission-sensors", "127.0.0.1", broker.port), 10);
    let sent = [("sensors/noise/ns-1", r#"{"laeq": 71.5, "ts": "2026-11-22T14:03:05.250+08:00"}"#), ("sensors/noise/ns-2", r#"{"laeq": "64.2", "ts": "2026-11-22T14:03:05"}"#)];
    for (topic, payload) in sent {
        client.publish(topic, rumqttc::QoS::AtLeastOnce, true, payload).await.unwrap();
    }
    let mut acked = 0;
    while acked < sent.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.poll()).await.expect("mosquitto answers").unwrap();
        acked += usize::from(matches!(event, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))));
    }
    let source = format!(
        "[[mqtt]]\nbroker = \"mqtt://127.0.0.1:{}\"\ntopic = \"sensors/noise/+\"\nsensor = \"topic:2\"\ntimestamp = \"json:ts\"\n  [mqtt.fields]\n  noise_laeq = \"laeq\"\n",
        broker.port
    );
    let config = source.clone();
    let (code, out, _dir) = tokio::task::spawn_blocking(move || run_test(&config)).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mqtt[0] sensors/noise/+ on mqtt://127.0.0.1:") && out.contains(": FAILED, 1 of 2 message(s) carried no reading"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("  error: ") && l.contains("timestamp_zone")), "the zone rule named: {out}");
    let row: Vec<&str> = out.lines().find(|l| l.contains("ns-1 noise_laeq")).unwrap_or_else(|| panic!("{out}")).split_whitespace().collect();
    assert_eq!(row, ["ns-1", "noise_laeq", "=", "71.5", "good", "from", "sensors/noise/ns-1", "at", "2026-11-22T06:03:05.250Z"], "+08:00 taken as such: {out}");

    // The zone the sensors' clocks keep, configured: both readings, at the same instant.
    let config = source.replace("timestamp = \"json:ts\"\n", "timestamp = \"json:ts\"\ntimestamp_zone = \"+08:00\"\n");
    let (code, out, _dir) = tokio::task::spawn_blocking(move || run_test(&config)).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": OK, 2 message(s)"), "{out}");
    let row: Vec<&str> = out.lines().find(|l| l.contains("ns-2 noise_laeq")).unwrap_or_else(|| panic!("{out}")).split_whitespace().collect();
    assert_eq!(row, ["ns-2", "noise_laeq", "=", "64.2", "good", "from", "sensors/noise/ns-2", "at", "2026-11-22T06:03:05.000Z"], "{out}");
}
