//! The files in deploy/ are checked as a person installing them would:
//! systemd units pass `systemd-analyze verify` with no warning, and the
//! example collector configs pass `check`.

use std::path::Path;
use std::process::Command;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_citysense-collector");

fn deploy() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

#[test]
fn systemd_units_verify_cleanly() {
    let bin_dir = Path::new(COLLECTOR).parent().unwrap();
    assert!(bin_dir.join("citysense-agent").exists(), "build the workspace first (cargo test --workspace)");
    let dir = tempfile::tempdir().unwrap();
    for unit in ["citysense-agent.service", "citysense-collector.service"] {
        let text = std::fs::read_to_string(deploy().join("systemd").join(unit)).unwrap();
        // The units name /usr/local/bin; verify checks that ExecStart exists.
        let local = dir.path().join(unit);
        std::fs::write(&local, text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()))).unwrap();
        let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&local).output().expect("systemd-analyze (Debian package systemd; ./tests/run installs it)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "{unit}: {err}");
    }
    // The broker cluster's node, as instance 1 of its template; verify checks
    // that the server it names exists: the one tests/run installed.
    let nats = std::env::var("CITYSENSE_NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
    let text = std::fs::read_to_string(deploy().join("systemd/citysense-nats@.service")).unwrap();
    let local = dir.path().join("citysense-nats@1.service");
    std::fs::write(&local, text.replace("/usr/local/bin/nats-server", &nats)).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&local).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "citysense-nats@.service: {err}");
}

#[test]
fn the_scale_out_collector_configs_pass_check() {
    // As installed: certificates made by deploy/make-test-ca.sh where the configs expect them.
    let root = tempfile::tempdir().unwrap();
    let tls = root.path().join("tls");
    let made = Command::new("bash").arg(deploy().join("make-test-ca.sh")).arg(&tls).arg("collector.city.example").output().unwrap();
    assert!(made.status.success(), "make-test-ca.sh: {}", String::from_utf8_lossy(&made.stderr));
    let password = root.path().join("mqtt-password");
    std::fs::write(&password, "collector-password\n").unwrap();
    for name in ["collector-a.toml", "collector-b.toml", "nats/collector.toml"] {
        let text = std::fs::read_to_string(deploy().join(name))
            .unwrap()
            .replace("/etc/citysense/tls", &tls.display().to_string())
            .replace("/etc/citysense/mqtt-password", &password.display().to_string());
        let installed = root.path().join(name.replace('/', "-"));
        std::fs::write(&installed, text).unwrap();
        let out = Command::new(COLLECTOR).args(["check", "--config"]).arg(&installed).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        // The shipped configs log in to the broker: no warning.
        assert!(!err.contains("warning"), "{name}: {err}");
    }
    // make-test-ca.sh also issues the broker's certificate (deploy/mosquitto.conf).
    assert!(tls.join("broker.pem").is_file() && tls.join("broker.key").is_file());
}

/// An external broker reached without a login is accepted with a warning
/// that names the missing settings; with both, no warning.
#[test]
fn check_warns_about_an_external_broker_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("mqtt-password");
    std::fs::write(&password, "pw\n").unwrap();
    let store = dir.path().join("store");
    let cases = [
        ("", Some("(no mqtt.username, no mqtt.password_file)")),
        ("username = \"citysense-collector\"\n", Some("(no mqtt.password_file)")),
        (&*format!("username = \"citysense-collector\"\npassword_file = \"{}\"\n", password.display()), None),
    ];
    for (login, warning) in cases {
        let config = dir.path().join("collector.toml");
        std::fs::write(&config, format!("[mqtt]\nexternal = \"mqtt://broker:1883\"\n{login}[store]\npath = \"{}\"\n", store.display())).unwrap();
        let out = Command::new(COLLECTOR).args(["check", "--config"]).arg(&config).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "a warning is not an error: {stderr}");
        assert!(stdout.contains(": ok: external broker mqtt://broker:1883"), "{stdout}");
        match warning {
            Some(missing) => {
                let line = format!("{}:2: mqtt.external: warning: `mqtt://broker:1883` is reached without credentials {missing}", config.display());
                assert!(stderr.contains(&line), "expected `{line}` in:\n{stderr}");
            }
            None => assert!(stderr.trim().is_empty(), "{stderr}"),
        }
    }
}
