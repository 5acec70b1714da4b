//! The outbox's storage going wrong under a running agent binary: a data
//! directory that cannot be opened is retried while status says why; a damaged
//! store is refused with the recovery command, never silently wiped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::config::WhenFull;
use agent::outbox::{Outbox, SledOutbox};
use agent::source::NewReading;
use shared::Quality;

const BIN: &str = env!("CARGO_BIN_EXE_citysense-agent");

fn config(dir: &Path, outbox: &Path, status_port: u16) -> std::path::PathBuf {
    let file = dir.join("agent.toml");
    std::fs::write(
        &file,
        format!(
            "gateway = \"gw-disk\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:9\"\n[buffer]\npath = \"{}\"\n[status]\nlisten = \"127.0.0.1:{status_port}\"\n\
             [[mqtt]]\nbroker = \"mqtt://127.0.0.1:9\"\ntopic = \"x/+\"\nsensor = \"topic:1\"\n  [mqtt.fields]\n  v = \"$\"\n",
            outbox.display()
        ),
    )
    .unwrap();
    file
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(port: u16) -> Option<String> {
    let out = Command::new(BIN).args(["status", "--addr", &format!("127.0.0.1:{port}")]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unopenable_data_directory_is_reported_by_status_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the data directory's parent should be: not creatable.
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, "not a directory").unwrap();
    let outbox = blocker.join("outbox");
    let port = free_port();
    let cfg = config(dir.path(), &outbox, port);
    let _agent = Running(Command::new(BIN).args(["run", "--config"]).arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());

    let failing = wait_for("status reporting the storage error", || status(port).filter(|s| s.contains("storage: FAILING")));
    assert!(failing.contains(&outbox.display().to_string()), "the error names the path: {failing}");

    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir_all(&blocker).unwrap();
    let healthy = wait_for("the agent to open its outbox once the directory is usable", || status(port).filter(|s| !s.contains("FAILING")));
    assert!(healthy.contains("buffer: 0 readings"), "{healthy}");
    assert!(outbox.join("watermark").exists() || outbox.join("db").exists());
}

#[test]
fn a_damaged_outbox_is_refused_with_the_recovery_command_and_reset_keeps_seqs_growing() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    {
        let ob = SledOutbox::open(&outbox, 64 << 20, WhenFull::DropOldest).unwrap();
        for chunk in 0..30 {
            let readings =
                (0..100).map(|i| NewReading { sensor: "wl-001".into(), metric: "water_level_m".into(), ts_ms: chunk * 100 + i, value: 1.0, quality: Quality::Good }).collect();
            ob.append(readings).unwrap();
        }
        ob.ack(1000).unwrap();
        assert_eq!(ob.flush().unwrap(), 3000);
    }
    // Damage sled's data file past its first third.
    let db = outbox.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let from = bytes.len() / 3;
    for b in &mut bytes[from..] {
        *b ^= 0x5A;
    }
    std::fs::write(&db, bytes).unwrap();

    let cfg = config(dir.path(), &outbox, free_port());
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a damaged outbox must not be run on: {err}");
    assert!(err.contains("is damaged") && err.contains("citysense-agent reset-outbox"), "{err}");
    assert!(db.exists(), "nothing was wiped");

    let out = Command::new(BIN).args(["reset-outbox", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("starts after seq 3000"), "{said}");
    let aside = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).find(|e| e.file_name().to_string_lossy().starts_with("outbox.damaged-"));
    assert!(aside.is_some(), "the damaged outbox is kept");
    let ob = SledOutbox::open(&outbox, 64 << 20, WhenFull::DropOldest).unwrap();
    assert_eq!(ob.stats().next_seq, 3001, "no seq is handed out twice");
    assert_eq!(ob.stats().floor_seq, 3001, "the collector is told everything before is gone");
}
