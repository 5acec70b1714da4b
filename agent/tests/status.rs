//! `citysense-agent status` against the real agent binary at the cabinet:
//! a device outage shows DOWN since its time with the error, recovery shows
//! UP with the error kept only as history; a SIGHUP with a broken config or
//! a renamed gateway is refused and status says so with the reasons, while
//! `status --config` on the broken file still reaches the running agent;
//! and a port that is no agent is named as such.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, status, wait_for, Mosquitto, Running, BIN};
use serde_json::Value;

/// `citysense-agent status ARGS`: exit code, stdout, stderr.
fn status_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("status").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The printed status line of one device.
fn device_line(text: &str, sensor: &str) -> String {
    text.lines().find(|l| l.starts_with(&format!("{sensor}: "))).unwrap_or_else(|| panic!("no line for {sensor}: {text}")).to_string()
}

fn device<'a>(report: &'a Value, sensor: &str) -> &'a Value {
    report["devices"].as_array().unwrap().iter().find(|d| d["sensor"] == sensor).unwrap_or_else(|| panic!("no {sensor} in {report}"))
}

/// `GET /metrics` of the agent, as text.
fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn kill(signal: &str, pid: &str) {
    assert!(Command::new("kill").args([signal, pid]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_an_outage_its_recovery_and_refused_reloads_as_they_are() {
    let city = sim::RunningCity::start(sim::City { air: 2, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let head = format!(
        "gateway = \"gw-cabinet\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:9\"\n[buffer]\npath = \"{}\"\n[status]\nlisten = \"{addr}\"\n\n",
        dir.path().join("outbox").display()
    );
    // Noise sensors over MQTT: the source is UP while its broker connection is.
    let mqtt_port = free_port();
    let broker = Mosquitto::start(dir.path(), mqtt_port);
    let noise = format!("[[mqtt]]\nbroker = \"mqtt://127.0.0.1:{mqtt_port}\"\ntopic = \"sensors/noise/+\"\nsensor = \"topic:2\"\n  [mqtt.fields]\n  noise_laeq = \"laeq\"\n\n");
    let good = format!("{head}{noise}{}", sim::run::modbus_toml(&[&city.devices[0], &city.devices[1]], Duration::from_millis(200)));
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, &good).unwrap();
    let child = Command::new(BIN).args(["run", "--config"]).arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id().to_string();
    let _agent = Running(child);

    const NOISE: &str = "mqtt[0] sensors/noise/+";
    let up = |s: &Value| ["aq-001", "aq-002", NOISE].iter().all(|d| device(s, d)["state"] == "up");
    let first = wait_for("both devices UP", || status(port).filter(|s| up(s))).await;
    let loaded_ms = first["config"]["loaded_ms"].as_i64().unwrap();
    assert!(loaded_ms > 0 && first["config"]["last_reload"].is_null(), "{first}");

    // The outage: aq-002 stops answering. DOWN from the failed poll, with the error.
    let silenced = shared::now_ms();
    city.control.set_silent("aq-002", true);
    let down = wait_for("aq-002 DOWN", || status(port).filter(|s| device(s, "aq-002")["state"] == "down")).await;
    let d = device(&down, "aq-002");
    let down_since = d["since_ms"].as_i64().unwrap();
    assert!(down_since >= silenced, "DOWN since the failed poll, not before the silence: {d}");
    assert!(d["error"].as_str().unwrap().contains("no answer within"), "{d}");
    assert!(d["last_error_ms"].as_i64().unwrap() >= silenced, "{d}");
    assert_eq!(device(&down, "aq-001")["state"], "up", "one device's outage is its own: {down}");
    let (code, text, err) = status_cli(&["--addr", &addr]);
    assert_eq!(code, 0, "{err}");
    let line = device_line(&text, "aq-002");
    assert!(line.starts_with("aq-002: DOWN since ") && line.contains(", error: ") && line.contains("no answer within"), "{text}");
    assert!(device_line(&text, "aq-001").starts_with("aq-001: UP since "), "{text}");
    assert!(metrics(port).contains("citysense_agent_device_up{gateway=\"gw-cabinet\",sensor=\"aq-002\"} 0"), "{}", metrics(port));

    // Recovery: UP again from the next good poll; the current error is
    // cleared, the last one stays as history with its time.
    city.control.set_silent("aq-002", false);
    let back = wait_for("aq-002 UP again", || status(port).filter(|s| device(s, "aq-002")["state"] == "up")).await;
    let d = device(&back, "aq-002");
    assert!(d["since_ms"].as_i64().unwrap() > down_since, "{d}");
    assert!(d["error"].is_null(), "no current error once UP: {d}");
    assert!(d["last_error"].as_str().unwrap().contains("no answer within") && d["last_error_ms"].as_i64().unwrap() >= silenced, "{d}");
    let (_, text, _) = status_cli(&["--addr", &addr]);
    let line = device_line(&text, "aq-002");
    assert!(line.starts_with("aq-002: UP since ") && line.contains("(recovered since): ") && !line.contains(", error: "), "{text}");
    assert!(metrics(port).contains("citysense_agent_device_up{gateway=\"gw-cabinet\",sensor=\"aq-002\"} 1"));

    // The MQTT source's broker goes away: DOWN with the connection error, UP when it is back.
    let stopped = shared::now_ms();
    drop(broker);
    let down = wait_for("the MQTT source DOWN", || status(port).filter(|s| device(s, NOISE)["state"] == "down")).await;
    let d = device(&down, NOISE);
    assert!(d["since_ms"].as_i64().unwrap() >= stopped && d["error"].as_str().unwrap().contains(&format!("broker mqtt://127.0.0.1:{mqtt_port}")), "{d}");
    let (_, text, _) = status_cli(&["--addr", &addr]);
    assert!(device_line(&text, NOISE).starts_with(&format!("{NOISE}: DOWN since ")), "{text}");
    let _broker = Mosquitto::start(dir.path(), mqtt_port);
    let back = wait_for("the MQTT source UP again", || status(port).filter(|s| device(s, NOISE)["state"] == "up")).await;
    assert!(device(&back, NOISE)["error"].is_null(), "{back}");

    // A broken file on SIGHUP: refused with its reasons, the running config kept.
    let broken = good.replacen("unit = 1", "unit = \"one\"", 1);
    std::fs::write(&cfg, &broken).unwrap();
    kill("-HUP", &pid);
    let refused = wait_for("the refused reload in status", || status(port).filter(|s| s["config"]["last_reload"].is_object())).await;
    let reload = &refused["config"]["last_reload"];
    assert_eq!(reload["accepted"], false, "{reload}");
    let problems: Vec<&str> = reload["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(problems.iter().any(|p| p.contains("agent.toml:") && p.contains("modbus[0].unit")), "{problems:?}");
    assert_eq!(refused["config"]["loaded_ms"].as_i64(), Some(loaded_ms), "still the config loaded at start: {refused}");
    assert!(reload["at_ms"].as_i64().unwrap() > loaded_ms);
    assert!(metrics(port).contains("citysense_agent_config_reload_refused{gateway=\"gw-cabinet\"} 1"));
    let polls = device(&refused, "aq-001")["polls"].as_u64().unwrap();
    wait_for("polling to go on", || status(port).filter(|s| device(s, "aq-001")["polls"].as_u64() > Some(polls + 3))).await;

    // `status --config` on that broken file: its problems, then the running agent's status.
    let (code, text, err) = status_cli(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("does not pass check") && err.contains(&format!("asking the running agent at {addr}")) && err.contains("modbus[0].unit"), "{err}");
    assert!(text.starts_with("gateway gw-cabinet: "), "{text}");
    assert!(text.contains("config: reload REFUSED ") && text.contains("still running the config loaded "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  ") && l.contains("agent.toml:") && l.contains("modbus[0].unit")), "the reasons, one per line: {text}");

    // A renamed gateway is refused too: the collector knows a gateway by its id.
    let at = reload["at_ms"].as_i64().unwrap();
    std::fs::write(&cfg, good.replace("gateway = \"gw-cabinet\"", "gateway = \"gw-renamed\"")).unwrap();
    kill("-HUP", &pid);
    let renamed = wait_for("the refused rename in status", || status(port).filter(|s| s["config"]["last_reload"]["at_ms"].as_i64() > Some(at))).await;
    let reload = &renamed["config"]["last_reload"];
    assert_eq!(reload["accepted"], false, "{reload}");
    assert!(reload["problems"][0].as_str().unwrap().contains("gateway: changed from `gw-cabinet` to `gw-renamed`"), "{reload}");
    assert_eq!(renamed["gateway"], "gw-cabinet");
    assert_eq!(renamed["config"]["loaded_ms"].as_i64(), Some(loaded_ms));

    // The file put right: accepted, and the refusal is gone from status.
    std::fs::write(&cfg, &good).unwrap();
    kill("-HUP", &pid);
    let fixed = wait_for("the accepted reload", || status(port).filter(|s| s["config"]["last_reload"]["accepted"] == true && up(s))).await;
    assert!(fixed["config"]["loaded_ms"].as_i64().unwrap() > loaded_ms, "{fixed}");
    let (_, text, _) = status_cli(&["--addr", &addr]);
    assert!(text.contains("config: reloaded ") && !text.contains("REFUSED"), "{text}");
    assert!(metrics(port).contains("citysense_agent_config_reload_refused{gateway=\"gw-cabinet\"} 0"));
    kill("-TERM", &pid);
}

/// A one-connection server that answers every request with `answer` (or
/// holds the connection without a word when None).
fn impostor(answer: Option<&'static str>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = s.read(&mut request);
        match answer {
            Some(a) => {
                let _ = s.write_all(a.as_bytes());
            }
            // Held open until the client gives up and closes.
            None => while s.read(&mut request).is_ok_and(|n| n > 0) {},
        }
    });
    port
}

#[test]
fn status_at_a_port_that_is_no_agent_says_so() {
    let cases = [
        (
            Some("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>router login</body></html>"),
            "answered, but it is not a citysense agent's status endpoint (`HTTP/1.1 200 OK` without a status report)",
        ),
        (Some("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"status\":\"ok\"}"), "`HTTP/1.1 200 OK` with JSON that is no status report"),
        (Some("SSH-2.0-OpenSSH_9.2\r\n"), "not HTTP: `SSH-2.0-OpenSSH_9.2`"),
        (None, "sent no answer within 5 s: not a citysense agent's status endpoint"),
    ];
    for (answer, expected) in cases {
        let addr = format!("127.0.0.1:{}", impostor(answer));
        let (code, out, err) = status_cli(&["--addr", &addr]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(&addr) && err.contains(expected) && err.contains("[status] listen"), "{err}");
        assert!(!err.contains("expected") && !err.contains("missing field"), "no deserializer wording: {err}");
    }
}
