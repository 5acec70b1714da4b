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
    assert_problem(&text, "float32", "modbus[0].point[0].type", "unknown variant `float32`");
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
