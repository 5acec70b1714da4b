//! `citysense-agent check` on the shipped example and on each mistake a
//! technician makes: exit 2 and `FILE:LINE: field.path: what is wrong`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml")).unwrap()
}

fn check(text: &str) -> (i32, String, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_citysense-agent")).args(["check", "--config"]).arg(&file).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned(), file, dir)
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("`{needle}` not in text")) + 1
}

/// Replaces the `nth` (0-based) occurrence of `from`.
fn replace_nth(text: &str, from: &str, to: &str, nth: usize) -> String {
    let idx = text.match_indices(from).nth(nth).unwrap_or_else(|| panic!("`{from}` #{nth} not found")).0;
    format!("{}{}{}", &text[..idx], to, &text[idx + from.len()..])
}

fn assert_problem(text: &str, line_needle: &str, path: &str, message_part: &str) {
    let (code, _, err, file, _dir) = check(text);
    assert_eq!(code, 2, "stderr: {err}");
    let expected_prefix = format!("{}:{}: {}: ", file.display(), line_of(text, line_needle), path);
    assert!(
        err.lines().any(|l| l.starts_with(&expected_prefix) && l.contains(message_part)),
        "expected a line starting `{expected_prefix}` mentioning `{message_part}`, got:\n{err}"
    );
}

#[test]
fn the_shipped_example_passes_with_a_summary() {
    let (code, out, err, _, _dir) = check(&example());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: gateway gw-xihu-01: 2 Modbus device(s) with 7 point(s), 1 MQTT source(s)"), "{out}");
}

#[test]
fn a_typo_in_a_key_is_named_on_its_line() {
    let text = example().replace("timeout = \"1s\"                          # per request", "timout = \"1s\"");
    assert_problem(&text, "timout", "modbus[0].timout", "unknown field `timout`");
}

#[test]
fn an_unknown_data_type_is_named() {
    let text = replace_nth(&example(), "type = \"f32\"", "type = \"float32\"", 0);
    assert_problem(&text, "float32", "modbus[0].point[0].type", "unknown type `float32`; one of bool u16 i16 u32 i32 u64 i64 f32 f64 bit bits");
}

#[test]
fn a_bad_device_address_is_explained() {
    let text = example().replace("tcp://10.20.1.12:502", "tcp://10.20.1.12:99999");
    assert_problem(&text, "99999", "modbus[1].address", "not a number from 1 to 65535");
    let text = example().replace("tcp://10.20.1.12:502", "udp://10.20.1.12");
    assert_problem(&text, "udp://", "modbus[1].address", "not a Modbus address");
}

#[test]
fn overlapping_registers_are_reported_with_both_points() {
    // pm10 (f32) moved onto the second register of pm25.
    let text = replace_nth(&example(), "address = 2", "address = 1", 0);
    assert_problem(&text, "address = 1", "modbus[0].point[1].address", "overlap point[0] (pm25)");
}

#[test]
fn a_value_running_past_the_last_register_is_reported() {
    let text = replace_nth(&example(), "address = 6", "address = 65535", 0).replace("type = \"i16\"", "type = \"f32\"");
    assert_problem(&text, "address = 65535", "modbus[0].point[3].address", "past the last address 65535");
}

#[test]
fn a_duplicate_metric_on_one_device_is_reported() {
    let text = replace_nth(&example(), "metric = \"pm10\"", "metric = \"pm25\"", 0);
    let (code, _, err, _, _d) = check(&text);
    assert_eq!(code, 2);
    assert!(err.contains("modbus[0].point[1].metric: `pm25` is already read by point[0]"), "{err}");
}

#[test]
fn an_interval_shorter_than_the_timeout_is_reported() {
    let text = example().replace("\ninterval = \"10s\"", "\ninterval = \"500ms\"");
    assert_problem(&text, "interval = \"500ms\"", "modbus[1].interval", "shorter than timeout 1s");
}

#[test]
fn a_missing_credentials_file_is_reported() {
    let text = example().replace("# password_file", "password_file").replace("# username", "username");
    assert_problem(&text, "password_file", "uplink.password_file", "does not exist");
}

#[test]
fn a_bool_in_a_register_table_and_a_bad_mqtt_sensor_level_are_reported() {
    let text = replace_nth(&example(), "type = \"u16\"", "type = \"bool\"", 0).replace("sensor = \"topic:2\"", "sensor = \"topic:7\"");
    let (code, _, err, _, _d) = check(&text);
    assert_eq!(code, 2);
    assert!(err.contains("modbus[1].point[1].type: \"bool\" needs table \"coil\" or \"discrete\""), "{err}");
    assert!(err.contains("mqtt[0].sensor: topic level 7 does not exist"), "{err}");
    assert_eq!(err.lines().count(), 2, "one line per problem: {err}");
}

#[test]
fn broken_toml_is_reported_on_its_line() {
    let text = example().replace("batch_max = 500", "batch_max = = 500");
    let (code, _, err, file, _d) = check(&text);
    assert_eq!(code, 2);
    assert!(err.starts_with(&format!("{}:{}:", file.display(), line_of(&text, "batch_max"))), "{err}");
}

#[test]
fn collector_check_passes_the_example_and_rejects_mistakes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/collector.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(if cfg!(debug_assertions) { "debug" } else { "release" }).join("citysense-collector");
    if !bin.exists() {
        panic!("{} is not built: run the workspace tests (cargo test --workspace)", bin.display());
    }
    let ok = Command::new(&bin).args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    // The retention rules, as they will apply.
    let shown = String::from_utf8_lossy(&ok.stdout);
    assert!(shown.contains("retention: raw 30d, 1-minute rollups 1year, 1-hour rollups 10years (deleted every 1m)"), "{shown}");
    assert!(shown.contains("retention for metric noise_laeq: raw 3d, 1-minute 90d, 1-hour 10years"), "{shown}");
    let dir = tempfile::tempdir().unwrap();
    let broken_lifecycle = dir.path().join("lifecycle.toml");
    std::fs::write(&broken_lifecycle, text.replace("kind = \"traffic\"\nraw = \"7d\"", "raw = \"7d\"").replace("expire_every = \"1m\"", "expire_every = \"soon\"")).unwrap();
    let out = Command::new(&bin).args(["check", "--config"]).arg(&broken_lifecycle).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("store.expire_every: `soon` is not a duration"), "{err}");
    let broken_rule = dir.path().join("rule.toml");
    std::fs::write(&broken_rule, text.replace("kind = \"traffic\"\nraw = \"7d\"", "raw = \"7d\"")).unwrap();
    let out = Command::new(&bin).args(["check", "--config"]).arg(&broken_rule).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.retention[0]: name the `kind` or `metric` it applies to"), "{err}");
    let influx = dir.path().join("influx.toml");
    std::fs::write(&influx, format!("{text}\n[influxdb]\nurl = \"influx:8086\"\norg = \"city\"\nbucket = \"\"\ntoken_file = \"missing.token\"\n")).unwrap();
    let out = Command::new(&bin).args(["check", "--config"]).arg(&influx).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("influxdb.url: `influx:8086` is not an http:// or https:// URL"), "{err}");
    assert!(err.contains("influxdb.bucket: must not be empty"), "{err}");
    assert!(err.contains("influxdb.token_file: file"), "{err}");
    let bad = dir.path().join("collector.toml");
    std::fs::write(&bad, text.replace("id = \"tr-001\"", "id = \"aq-001\"").replace("lat = 30.242", "lat = 130.242")).unwrap();
    let out = Command::new(&bin).args(["check", "--config"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("sensor[1].id: `aq-001` is already catalogued as sensor[0]"), "{err}");
    assert!(err.contains("sensor[2].lat: must be between -90 and 90"), "{err}");
    // The nodes of a broker cluster, each checked.
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(&cluster, text.replace("listen = \"127.0.0.1:1883\"", "external = [\"mqtt://nats-1:1883\", \"mqtt//nats-2:1883\"]")).unwrap();
    let out = Command::new(&bin).args(["check", "--config"]).arg(&cluster).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("mqtt.external[1]: `mqtt//nats-2:1883` is not a broker URL"), "{err}");
    // Cluster mode reads the cluster's log: it needs the cluster's MQTT side too.
    let log = dir.path().join("log.toml");
    std::fs::write(&log, format!("{text}\n[cluster]\nnats = [\"nats://nats-1:4222\", \"nats-2\"]\nreplicas = 7\n")).unwrap();
    let out = Command::new(&bin).args(["check", "--config"]).arg(&log).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cluster: cluster mode needs mqtt.external"), "{err}");
    assert!(err.contains("cluster.replicas: 7 copies"), "{err}");
}

#[test]
fn version_names_the_git_revision() {
    let out = Command::new(env!("CARGO_BIN_EXE_citysense-agent")).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("citysense-agent ") && text.contains("(git "), "{text}");
}

#[test]
fn verbose_check_lists_what_will_be_polled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, example()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_citysense-agent")).args(["check", "--verbose", "--config"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("aq-001 at tcp://10.20.1.11:502 unit 1 every 5s (timeout 1s, 2 retries): pm25, pm10, no2, temperature_c in 1 request(s): holding 0+7"), "{text}");
    assert!(text.contains("mqtt[0] mqtt://127.0.0.1:1884 topic sensors/noise/+ sensor topic:2: noise_laeq = laeq"), "{text}");
}

fn run_check(text: &str, verbose: bool) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_citysense-agent"));
    cmd.args(["check", "--config"]).arg(&file);
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_datasheet_number_as_a_0_based_address_is_refused_naming_the_conversion() {
    let text = replace_nth(&example(), "address = 0", "address = 40101", 0);
    assert_problem(&text, "address = 40101", "modbus[0].point[0].address", "holding register 40101 is 0-based address 100. Write `ref = 40101`");
    // Copied from the datasheet without a table: the conversion is still the fix named, not the table.
    let text = text.replacen("  table = \"holding\"                     # holding | input | coil | discrete\n", "", 1);
    assert_problem(&text, "address = 40101", "modbus[0].point[0].address", "holding register 40101 is 0-based address 100. Write `ref = 40101`");
    // The same number as a datasheet reference is accepted, and -v shows the conversion.
    for written in ["address = \"40101\"", "ref = 40101", "ref = \"40101-40102\"", "address = \"0x0064\""] {
        let text = replace_nth(&example(), "address = 0", written, 0);
        let (code, out, err) = run_check(&text, true);
        assert_eq!(code, 0, "{written}: {err}");
        assert!(out.contains("pm25: holding 100..101 (datasheet 40101) f32 ABCD"), "{written}: {out}");
    }
    let text = replace_nth(&example(), "address = 0", "ref = 30101", 0);
    assert_problem(&text, "ref = 30101", "modbus[0].point[0].ref", "is in the input table (3xxxx), but table = \"holding\"");
    let text = replace_nth(&example(), "address = 0", "ref = \"40101-40103\"", 0);
    assert_problem(&text, "40101-40103", "modbus[0].point[0].ref", "spans 3 register(s) but type `f32` takes 2");
}

#[test]
fn bit_fields_and_ranges_are_checked() {
    let point = "  [[modbus.point]]\n  metric = \"alarm\"\n  ref = 40008\n  type = \"bit\"\n  bit = 3\n  [[modbus.point]]\n  metric = \"mode\"\n  ref = \"40008\"\n  type = \"bits\"\n  bits = [4, 7]\n  range = [0, 9]\n";
    let text = example().replace("# --- Traffic counter ---", &format!("{point}\n# --- Traffic counter ---"));
    let (code, out, err) = run_check(&text, true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alarm: holding 7 (datasheet 40008) bit 3\n") && out.contains("mode: holding 7 (datasheet 40008) bits 4..=7, plausible 0..=9"), "{out}");
    let clash = text.replace("bits = [4, 7]", "bits = [3, 7]");
    assert_problem(&clash, "ref = \"40008\"", "modbus[0].point[5].ref", "bits of register 7 of table `holding` overlap point[4] (alarm)");
    let clash = text.replace("bit = 3", "bit = 16");
    assert_problem(&clash, "bit = 16", "modbus[0].point[4].bit", "not a bit of a 16-bit register");
    let word = text.replace("ref = 40008\n  type = \"bit\"", "ref = 40007\n  type = \"bit\"");
    assert_problem(&word, "ref = 40007", "modbus[0].point[4].ref", "overlap point[3] (temperature_c)");
    let range = text.replace("range = [0, 9]", "range = [9, 0]");
    assert_problem(&range, "range = [9, 0]", "modbus[0].point[5].range", "min below max");
}

const RTU: &str =
    "[[modbus]]\nsensor = \"tr-rtu\"\naddress = \"rtu:///dev/ttyUSB0?baud=9600\"\nunit = 7\n  [[modbus.point]]\n  metric = \"count\"\n  table = \"input\"\n  address = 0\n";

#[test]
fn accepted_but_wrong_settings_are_refused_with_the_fix() {
    let with_rtu = format!("{}\n{RTU}", example());
    let text = with_rtu.replace("unit = 7", "unit = 250");
    assert_problem(&text, "unit = 250", "modbus[2].unit", "reserved on a serial bus (devices use 1..=247)");
    let text = with_rtu.replace("baud=9600\"\nunit = 7", "baud=192000\"\nunit = 7");
    assert_problem(&text, "baud=192000", "modbus[2].address", "baud 192000 is not a standard rate");
    let text = example().replace("sensor = \"topic:2\"", "sensor = \"id\"");
    assert_problem(&text, "sensor = \"id\"", "mqtt[0].sensor", "Write \"json:id\"");
    let text = example().replace("interval = \"5s\"", "interval = 5");
    assert_problem(&text, "interval = 5", "modbus[0].interval", "write \"5s\"");
    let text = example().replace("scale = 0.1                           # the device", "scale = \"0.1\" # the device");
    assert_problem(&text, "scale = \"0.1\"", "modbus[0].point[3].scale", "write a number without quotes");
    let text = example().replace("timeout = \"1s\"                          # per request", "timout = \"1s\"");
    assert_problem(&text, "timout", "modbus[0].timout", "did you mean `timeout`?");
}

#[test]
fn every_type_error_of_the_file_comes_in_one_run() {
    let text = example().replace("interval = \"5s\"", "interval = 5").replace("scale = 0.1                           # the device", "scale = \"0.1\" # the device");
    let (code, _, err) = run_check(&text, false);
    assert_eq!(code, 2);
    assert!(err.contains("modbus[0].interval") && err.contains("modbus[0].point[3].scale"), "{err}");
}

#[test]
fn status_on_every_interface_is_a_warning_and_defaults_are_shown_by_verbose() {
    let text = example().replace("listen = \"127.0.0.1:9102\"", "listen = \"0.0.0.0:9102\"");
    let (code, _, err) = run_check(&text, false);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("status.listen: warning: 0.0.0.0:9102 serves /status and /metrics to the network without authentication"), "{err}");
    let text = replace_nth(&example(), "  order = \"CDAB\"\n", "", 0).replace("type = \"i16\"\n", "");
    let (code, out, err) = run_check(&text, true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pm10: holding 2..3 (datasheet 40003) f32 ABCD (default: no `order` given"), "{out}");
    assert!(out.contains("temperature_c: holding 6 (datasheet 40007) u16 (default: no `type` given)"), "{out}");
}

#[test]
fn a_broker_list_is_checked_broker_by_broker() {
    let base = example();
    let listed = base.replace("broker = \"mqtt://127.0.0.1:1883\"", "broker = [\"mqtt://127.0.0.1:1883\", \"mqtt://127.0.0.2:1883\"]");
    let (code, out, err, _, _dir) = check(&listed);
    assert_eq!(code, 0, "{out}{err}");
    assert_problem(&base.replace("broker = \"mqtt://127.0.0.1:1883\"", "broker = []"), "broker = []", "uplink.broker", "give at least one address");
    assert_problem(&base.replace("broker = \"mqtt://127.0.0.1:1883\"", "broker = [\"mqtt://a\", \"http://b\"]"), "http://b", "uplink.broker", "`http://b` is not a broker URL");
    // A failover that would drop TLS would send the password in the clear.
    assert_problem(&base.replace("broker = \"mqtt://127.0.0.1:1883\"", "broker = [\"mqtts://a\", \"mqtt://b\"]"), "mqtts://a", "uplink.broker[1]", "plain mqtt:// beside mqtts://");
}
