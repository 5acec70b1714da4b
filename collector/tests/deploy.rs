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
}

#[test]
fn the_scale_out_collector_configs_pass_check() {
    // As installed: certificates made by deploy/make-test-ca.sh where the configs expect them.
    let root = tempfile::tempdir().unwrap();
    let tls = root.path().join("tls");
    let made = Command::new("bash").arg(deploy().join("make-test-ca.sh")).arg(&tls).arg("collector.city.example").output().unwrap();
    assert!(made.status.success(), "make-test-ca.sh: {}", String::from_utf8_lossy(&made.stderr));
    for name in ["collector-a.toml", "collector-b.toml"] {
        let text = std::fs::read_to_string(deploy().join(name)).unwrap().replace("/etc/citysense/tls", &tls.display().to_string());
        let installed = root.path().join(name);
        std::fs::write(&installed, text).unwrap();
        let out = Command::new(COLLECTOR).args(["check", "--config"]).arg(&installed).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
