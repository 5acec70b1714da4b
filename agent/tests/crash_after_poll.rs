//! The crash promise: a reading is durable before the agent counts it as
//! taken. The real agent binary polls three simulated devices every 50 ms
//! (its uplink unreachable, so nothing is ever acknowledged and deleted); as
//! soon as `/status` shows a poll round made durable (`durable_seq` grew),
//! the agent is killed with SIGKILL, a few milliseconds later. Reopening the
//! outbox must then give back every seq up to that `durable_seq`: a kill -9
//! loses at most readings whose fsync had not returned. Five kills in a row,
//! each agent starting on the outbox the last one left. And from the
//! source's side: a poll counted in `/status` (a device's `polls`) had its
//! readings made durable before it was counted, so a kill right after the
//! count grew loses none of the readings of any counted poll.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::config::WhenFull;
use agent::outbox::{Outbox, SledOutbox};
use common::{free_port, Running, BIN};

/// `GET /status` straight over a socket: a few hundred microseconds, so the
/// kill lands right after the poll's fsync returned.
fn status(port: u16) -> Option<serde_json::Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

fn durable_seq(port: u16) -> Option<u64> {
    status(port)?["durable_seq"].as_u64()
}

/// Polls counted so far, by sensor.
fn polls(port: u16) -> Option<BTreeMap<String, u64>> {
    let s = status(port)?;
    s["devices"].as_array()?.iter().map(|d| Some((d["sensor"].as_str()?.to_string(), d["polls"].as_u64()?))).collect()
}

fn reopen(path: &Path) -> SledOutbox {
    SledOutbox::open(path, 512 << 20, WhenFull::DropOldest).unwrap_or_else(|e| panic!("reopening after kill -9: {e}"))
}

fn agent(dir: &Path, status_port: u16, modbus: &str) -> Running {
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "gateway = \"gw-crash\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:9\"\n[buffer]\npath = \"{}\"\n[status]\nlisten = \"127.0.0.1:{status_port}\"\n\n{modbus}",
            dir.join("outbox").display()
        ),
    )
    .unwrap();
    Running(Command::new(BIN).args(["run", "--config"]).arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_right_after_a_poll_was_made_durable_loses_none_of_it() {
    let city = sim::RunningCity::start(sim::City { air: 3, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let modbus = sim::run::modbus_toml(&devices, Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0u64;
    for round in 0..5 {
        let port = free_port();
        let mut running = agent(dir.path(), port, &modbus);
        // The first answer shows what the outbox held on opening; wait for a
        // poll made durable after it, then kill at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        let opened = loop {
            if let Some(d) = tokio::task::block_in_place(|| durable_seq(port)) {
                break d;
            }
            assert!(Instant::now() < deadline, "round {round}: the agent's status never answered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(opened >= last, "round {round}: the outbox opened at durable seq {opened}, below {last} shown before the last kill");
        let (durable, seen) = loop {
            if let Some(d) = tokio::task::block_in_place(|| durable_seq(port)).filter(|d| *d > opened) {
                break (d, Instant::now());
            }
            assert!(Instant::now() < deadline, "round {round}: no poll became durable");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        running.0.kill().unwrap();
        let killed_after = seen.elapsed();
        running.0.wait().unwrap();
        drop(running);
        assert!(killed_after < Duration::from_millis(20), "round {round}: the kill came {killed_after:?} after the poll was durable");

        let ob = tokio::task::spawn_blocking({
            let path = dir.path().join("outbox");
            move || SledOutbox::open(&path, 512 << 20, WhenFull::DropOldest)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("round {round}: reopening after kill -9: {e}"));
        let held: Vec<u64> = ob.read(1, durable, usize::MAX).unwrap().iter().map(|r| r.seq.get()).collect();
        assert_eq!(held.len() as u64, durable, "round {round}: seqs 1..={durable} were durable when the agent was killed; {} survive", held.len());
        assert!(held.iter().copied().eq(1..=durable), "round {round}: a gap in the surviving seqs");
        assert!(ob.stats().next_seq > durable, "round {round}: a durable seq would be handed out again");
        last = durable;
        let closing = tokio::task::spawn_blocking(move || drop(ob));
        closing.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_right_after_polls_were_counted_loses_none_of_their_readings() {
    let city = sim::RunningCity::start(sim::City { air: 3, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let per_poll: BTreeMap<String, u64> = devices.iter().map(|d| (d.device.spec.id.clone(), d.device.points.len() as u64)).collect();
    let modbus = sim::run::modbus_toml(&devices, Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    for round in 0..3 {
        // What earlier rounds left: this round's readings come after it.
        let before = if round == 0 { 0 } else { tokio::task::block_in_place(|| reopen(&path).stats().next_seq - 1) };
        let port = free_port();
        let mut running = agent(dir.path(), port, &modbus);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Kill as soon as some device has a poll counted beyond the first
        // answer seen, mid-stream of the others' polls.
        let mut first: Option<BTreeMap<String, u64>> = None;
        let (counted, seen) = loop {
            if let Some(p) = tokio::task::block_in_place(|| polls(port)) {
                match &first {
                    None => first = Some(p),
                    Some(f) if p.iter().any(|(s, n)| *n > f.get(s).copied().unwrap_or(0)) => break (p, Instant::now()),
                    Some(_) => {}
                }
            }
            assert!(Instant::now() < deadline, "round {round}: no poll was counted");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        running.0.kill().unwrap();
        let killed_after = seen.elapsed();
        running.0.wait().unwrap();
        drop(running);
        assert!(killed_after < Duration::from_millis(20), "round {round}: the kill came {killed_after:?} after the count");

        let ob = tokio::task::block_in_place(|| reopen(&path));
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        for r in ob.read(before + 1, u64::MAX >> 8, usize::MAX).unwrap() {
            *held.entry(r.sensor.to_string()).or_default() += 1;
        }
        for (sensor, n) in &counted {
            let need = n * per_poll[sensor];
            let got = held.get(sensor).copied().unwrap_or(0);
            assert!(got >= need, "round {round}: {sensor} had {n} polls counted ({need} readings), {got} survive the kill");
        }
        tokio::task::spawn_blocking(move || drop(ob)).await.unwrap();
    }
}
