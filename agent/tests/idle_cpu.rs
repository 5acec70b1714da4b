//! An agent that cannot send uses next to no CPU ("100% CPU at idle" is a
//! complaint about other gateways). Two real agent binaries poll one simulated
//! device: one's uplink is unreachable; the other's broker (Mosquitto) takes
//! its batches but no collector ever acknowledges them, so its in-flight
//! window fills and stays full. Both are measured over the same three seconds.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, status, wait_for, Running, BIN};

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn agent(dir: &Path, name: &str, broker: &str, status_port: u16, modbus: &str) -> Running {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "gateway = \"gw-{name}\"\n[uplink]\nbroker = \"{broker}\"\nbatch_max = 1\nmax_inflight = 1\nlinger = \"1ms\"\nack_timeout = \"1h\"\n\
             [buffer]\npath = \"{}\"\nflush = \"20ms\"\n[status]\nlisten = \"127.0.0.1:{status_port}\"\n\n{modbus}",
            dir.join(format!("outbox-{name}")).display()
        ),
    )
    .unwrap();
    Running(Command::new(BIN).args(["run", "--config"]).arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_send_does_not_spin() {
    let city = sim::RunningCity::start(sim::City { air: 1, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let modbus = sim::run::modbus_toml(&[&city.devices[0]], Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();

    // Listening before the agents start: one that found no broker would wait
    // out its reconnect backoff, past this test's patience (seen once in CI).
    let broker = common::Mosquitto::start(dir.path(), free_port());
    let mqtt_port = broker.port;

    let (full_port, dead_port) = (free_port(), free_port());
    let full = agent(dir.path(), "unacked", &format!("mqtt://127.0.0.1:{mqtt_port}"), full_port, &modbus);
    let dead = agent(dir.path(), "unreachable", "mqtt://127.0.0.1:9", dead_port, &modbus);

    // One batch of one reading out and never acked; more durable behind it.
    wait_for("the unacked agent's window to fill", || status(full_port).filter(|s| s["connected"] == true && s["durable_seq"].as_u64() >= Some(5) && s["acked_seq"] == 0)).await;
    wait_for("the unreachable agent to buffer", || status(dead_port).filter(|s| s["durable_seq"].as_u64() >= Some(5))).await;

    let (full_pid, dead_pid) = (full.0.id(), dead.0.id());
    let before = (cpu_secs(full_pid), cpu_secs(dead_pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = before.2.elapsed().as_secs_f64();
    let used = (cpu_secs(full_pid) - before.0, cpu_secs(dead_pid) - before.1);
    // Polling one device 5 times a second costs well under 5% of a core; a
    // loop that never waits takes all it can get (over 30% even on a busy CI).
    assert!(used.0 < window * 0.2, "agent with a full in-flight window used {:.2}s CPU in {window:.1}s", used.0);
    assert!(used.1 < window * 0.2, "agent with an unreachable uplink used {:.2}s CPU in {window:.1}s", used.1);
    let s = status(full_port).unwrap();
    assert_eq!(s["acked_seq"], 0, "nothing acknowledged what nobody received: {s}");
    assert!(s["buffer_depth"].as_u64() >= Some(5), "every reading is still held: {s}");
}
