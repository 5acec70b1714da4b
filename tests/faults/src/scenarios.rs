//! The fault scenarios. Each builds a small world of real processes, injects
//! its fault, lets the system drain and accounts for every counter value.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::effects::{compare, count_alerts, count_webhooks, crossings, metric_sum, vm_counter_samples, Effects, Hooks, Sse};
use crate::harness::{account, free_port, get, get_json, metric, now_ms, wait_for, wait_for_port, Bins, Proc, Report};

/// The agent's `buffer.flush` in every scenario: the longest gap between fsyncs.
const FLUSH_MS: i64 = 100;

pub const ALL: [&str; 7] = ["broker-outage", "agent-sigkill", "collector-sigkill", "buffer-full", "disk-full", "agent-powercut", "collector-powercut"];

pub fn run(name: &str, bins: &Bins) -> Result<Report> {
    match name {
        "broker-outage" => broker_outage(bins),
        "agent-sigkill" => agent_sigkill(bins),
        "collector-sigkill" => collector_sigkill(bins),
        "buffer-full" => buffer_full(bins),
        "disk-full" => disk_full(bins),
        "agent-powercut" => crate::powercut::agent(bins, crate::powercut::SUITE_CUTS, crate::powercut::seed()),
        "collector-powercut" => crate::powercut::collector(bins, crate::powercut::SUITE_CUTS, crate::powercut::seed()),
        other => bail!("unknown scenario `{other}`; one of {}", ALL.join(", ")),
    }
}

pub(crate) struct Options {
    pub external_broker: bool,
    pub only_counter: bool,
    pub devices: (u32, u32, u32),
    pub interval: &'static str,
    pub max_bytes: &'static str,
    /// Mount a tmpfs of this many KiB for the outbox (needs root).
    pub outbox_fs_kib: Option<u32>,
    /// Put the agent's outbox or the collector's store on a crash disk (needs root and /dev/fuse).
    pub crash_disk: Option<CrashAt>,
    /// The InfluxDB sink on, into a VictoriaMetrics kept without dedup.
    pub victoria: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashAt {
    Outbox,
    Store,
}

pub(crate) struct World {
    pub dir: tempfile_dir::Dir,
    agent_bin: PathBuf,
    collector_bin: PathBuf,
    pub sim: Proc,
    pub mosquitto: Option<Proc>,
    mosquitto_conf: PathBuf,
    pub collector: Option<Proc>,
    pub agent: Option<Proc>,
    pub http: u16,
    pub status: u16,
    pub counter_log: PathBuf,
    mount: Option<Mount>,
    pub disk: Option<powercut::CrashDisk>,
    /// The log files of the agent and the collector started last.
    pub agent_log: PathBuf,
    pub collector_log: PathBuf,
    /// How many times a collector was started: its counters start at zero each time.
    pub collector_starts: u32,
    /// The live feed's counter topics, heard from the first collector start on.
    feed: Option<crate::harness::Feed>,
    mqtt: u16,
    /// Every reading is a counter value: the agent's seqs count them one for one.
    only_counter: bool,
    /// The collector's SSE stream, read from the first collector start on.
    sse: Option<Sse>,
    /// The webhook receiver the collector's `[[webhook]]` points at.
    hooks: Hooks,
    pub victoria: Option<support::Victoria>,
    /// Nothing was stored before the first feed and SSE subscriptions: both must carry every reading.
    fresh_start: bool,
    /// Readings the store held when the running collector started, while no
    /// agent could send (`record_baseline`): its stored_total counts the rest.
    stored_baseline: Option<u64>,
}

/// The last 15 lines of a log file.
pub(crate) fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Waits until `port` answers (true) or `p` exits (false).
fn wait_up(what: &str, port: u16, p: &mut Proc) -> Result<bool> {
    wait_for(what, Duration::from_secs(30), || {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(true);
        }
        (!p.is_running()).then_some(false)
    })
}

/// A small tmpfs, so that "disk full" is a real ENOSPC. Unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path, kib: u32) -> Result<Mount> {
        std::fs::create_dir_all(at)?;
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"]).arg(at).status()?;
        if !ok.success() {
            bail!("cannot mount a tmpfs at {} (the disk-full scenario needs root)", at.display());
        }
        Ok(Mount(at.to_path_buf()))
    }

    fn grow(&self, kib: u32) -> Result<()> {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={kib}k")]).arg(&self.0).status()?;
        if !ok.success() {
            bail!("cannot grow the tmpfs at {}", self.0.display());
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A scratch directory removed at the end unless CITYSENSE_KEEP_FAULTS is set.
pub(crate) mod tempfile_dir {
    use std::path::{Path, PathBuf};
    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new(name: &str) -> std::io::Result<Dir> {
            let p = std::env::temp_dir().join(format!("citysense-fault-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            if std::env::var_os("CITYSENSE_KEEP_FAULTS").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl World {
    pub fn new(name: &str, bins: &Bins, o: Options) -> Result<World> {
        let dir = tempfile_dir::Dir::new(name)?;
        let d = dir.path().to_path_buf();
        let (http, status, mqtt) = (free_port(), free_port(), free_port());
        let mosquitto_conf = d.join("mosquitto.conf");
        let mut mosquitto = None;
        let broker = format!("mqtt://127.0.0.1:{mqtt}");
        let mqtt_section = if o.external_broker {
            std::fs::write(&mosquitto_conf, format!("listener {mqtt} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 4194304\n"))?;
            mosquitto = Some(start_mosquitto(&mosquitto_conf, &d, mqtt)?);
            format!("external = \"{broker}\"")
        } else {
            format!("listen = \"127.0.0.1:{mqtt}\"")
        };
        let hooks = Hooks::start()?;
        let mut victoria = None;
        let mut influx = String::new();
        if o.victoria {
            let port = free_port();
            std::fs::create_dir_all(d.join("victoria"))?;
            victoria = Some(support::Victoria::start(&d.join("victoria"), port)?);
            influx = format!("[influxdb]\nurl = \"http://127.0.0.1:{port}\"\norg = \"city\"\nbucket = \"faults\"\nbatch_points = 500\n");
        }
        std::fs::write(
            d.join("collector.toml"),
            format!(
                "[mqtt]\n{mqtt_section}\n[http]\nlisten = \"127.0.0.1:{http}\"\n[store]\npath = \"{}\"\n{influx}[[webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\n{}",
                path_str(&d.join("collector-store")),
                hooks.port,
                crate::effects::rules_toml()
            ),
        )?;
        let sources = d.join("sources.toml");
        let counter_log = d.join("counter.log");
        let mut cmd = Command::new(&bins.sim);
        cmd.args(["--air", &o.devices.0.to_string(), "--traffic", &o.devices.1.to_string(), "--water", &o.devices.2.to_string(), "--noise", "0"])
            .args(["--interval", o.interval, "--write-sources"])
            .arg(&sources)
            .arg("--counter-log")
            .arg(&counter_log);
        if o.only_counter {
            cmd.arg("--only-counter");
        }
        let sim = Proc::spawn("sim", &mut cmd, &d)?;
        wait_for("the simulator's sources file", Duration::from_secs(30), || sources.exists().then_some(()))?;
        let agent_cfg = format!(
            "gateway = \"gw-fault\"\n[uplink]\nbroker = \"{broker}\"\nbatch_max = 500\nlinger = \"50ms\"\nack_timeout = \"3s\"\nhealth_interval = \"1s\"\n\
             [buffer]\npath = \"{}\"\nmax_bytes = \"{}\"\nwhen_full = \"drop_oldest\"\nflush = \"{FLUSH_MS}ms\"\n[status]\nlisten = \"127.0.0.1:{status}\"\n\n{}",
            path_str(&d.join("agent-outbox")),
            o.max_bytes,
            std::fs::read_to_string(&sources)?
        );
        std::fs::write(d.join("agent.toml"), agent_cfg)?;
        let mut mount = None;
        if let Some(kib) = o.outbox_fs_kib {
            mount = Some(Mount::new(&d.join("agent-outbox"), kib)?);
        }
        let disk = match o.crash_disk {
            Some(at) => {
                let path = d.join(if at == CrashAt::Outbox { "agent-outbox" } else { "collector-store" });
                std::fs::create_dir_all(&path)?;
                Some(powercut::CrashDisk::mount(&path).context("the power-cut scenarios need root and /dev/fuse")?)
            }
            None => None,
        };
        Ok(World {
            dir,
            agent_bin: bins.agent.clone(),
            collector_bin: bins.collector.clone(),
            sim,
            mosquitto,
            mosquitto_conf,
            collector: None,
            agent: None,
            http,
            status,
            counter_log,
            mount,
            disk,
            agent_log: PathBuf::new(),
            collector_log: PathBuf::new(),
            collector_starts: 0,
            feed: None,
            mqtt,
            only_counter: o.only_counter,
            sse: None,
            hooks,
            victoria,
            fresh_start: false,
            stored_baseline: None,
        })
    }

    /// Starts the collector and waits for its HTTP port; a collector that
    /// exits instead fails at once with its last words.
    pub fn start_collector(&mut self) -> Result<()> {
        self.spawn_collector()?;
        if !self.wait_collector_up()? {
            bail!("the collector exited at start; its log ends:\n{}", log_tail(&self.collector_log));
        }
        if self.feed.is_none() {
            self.watch_feed()?;
            self.sse = Some(Sse::watch(self.http)?);
            // After both subscriptions: nothing stored yet means nothing was published before them.
            self.fresh_start = metric(self.http, "citysense_readings_stored_total")? == 0.0;
        } else if let Some(sse) = &self.sse {
            let starts = self.collector_starts;
            wait_for("the SSE stream to open again", Duration::from_secs(30), || (sse.connections() >= starts).then_some(()))?;
        }
        Ok(())
    }

    /// Readings the store holds (every seq stored, none dropped at the agent),
    /// for a collector just started while the agent is paused: what its
    /// `citysense_readings_stored_total` will not count.
    pub fn record_baseline(&mut self) -> Result<()> {
        let doc = match get_json(self.http, "/api/v1/gateways/gw-fault/progress") {
            Ok(doc) => doc,
            Err(e) if e.to_string().contains("404") => Value::Array(vec![]),
            Err(e) => return Err(e),
        };
        let held = doc.as_array().map(|a| a.iter().map(|s| s["acked_seq"].as_u64().unwrap_or(0) + s["waiting"].as_u64().unwrap_or(0)).sum()).unwrap_or(0);
        self.stored_baseline = Some(held);
        Ok(())
    }

    /// Subscribes to every counter on the live MQTT feed (QoS 0, what a
    /// dashboard or a city system hears) and waits for the subscription.
    fn watch_feed(&mut self) -> Result<()> {
        self.feed = Some(crate::harness::Feed::watch(self.mqtt)?);
        Ok(())
    }

    /// What users see, against what the agent made and the store holds:
    /// every counter value once on the live MQTT feed and on SSE (and, where
    /// the subscriptions ran from before the first reading with one collector
    /// throughout, none missing), `citysense_readings_stored_total` equal to
    /// the distinct readings (`handed_out` seqs less those the collector
    /// counted dropped at the agent, less what the store held when this
    /// collector started), one alert and one webhook change per crossing of
    /// the alert ladder, and each value once in VictoriaMetrics. Call with
    /// the collector running and the agent stopped.
    pub fn effects(&mut self, handed_out: u64, skipped: u64) -> Result<(Effects, Vec<String>)> {
        let started = Instant::now();
        let mut notes = Vec::new();
        let mut e = Effects::default();
        let feed = self.feed.as_ref().expect("the feed is watched from the first collector start");
        let sse = self.sse.as_ref().expect("SSE is watched from the first collector start");
        // The feeds' last messages, the rules and the webhook outbox are on their way: wait for all to go quiet.
        let mut last = (u64::MAX, 0, 0, 0.0);
        wait_for("the feeds, alerts and webhooks to go quiet", Duration::from_secs(60), || {
            std::thread::sleep(Duration::from_millis(300));
            let text = get(self.http, "/metrics").ok()?;
            let backlog = support::metric_in(&text, "citysense_webhook_backlog")?;
            let now = (feed.count(), sse.count(), self.hooks.count(), support::metric_in(&text, "citysense_rules_readings_evaluated_total").unwrap_or(0.0));
            (std::mem::replace(&mut last, now) == now && backlog == 0.0).then_some(())
        })?;
        let served = crate::harness::served(&self.counter_log)?;
        let mut stored: HashMap<String, HashSet<u64>> = HashMap::new();
        for sensor in served.keys() {
            let doc = get_json(self.http, &format!("/api/v1/series?sensor={sensor}&metric=counter&from=0"))?;
            let values = doc["points"].as_array().into_iter().flatten().map(|p| p["value"].as_f64().unwrap_or(-1.0) as u64);
            stored.insert(sensor.clone(), values.collect());
        }
        let metrics = get(self.http, "/metrics")?;
        let one_run = self.collector_starts == 1 && self.fresh_start;

        let (dup, extra, missing) = compare(&feed.heard.lock().unwrap(), &stored);
        (e.feed_dup, e.feed_extra) = (dup, extra);
        let mqtt_dropped = metric_sum(&metrics, "citysense_feed_dropped_total{feed=\"mqtt_live\"");
        if one_run && feed.connections() == 1 && mqtt_dropped == 0.0 {
            e.feed_missing = Some(missing);
        } else {
            notes.push(format!(
                "feed_unheard={missing} (QoS 0, not exact here: collector_starts={} feed_connections={} fresh_start={} mqtt_live_dropped={mqtt_dropped})",
                self.collector_starts,
                feed.connections(),
                self.fresh_start
            ));
        }
        let (dup, extra, missing) = compare(&sse.heard.lock().unwrap(), &stored);
        (e.sse_dup, e.sse_extra) = (dup, extra);
        let lagged = sse.lagged.load(std::sync::atomic::Ordering::SeqCst);
        if one_run && sse.connections() == 1 && lagged == 0 {
            e.sse_missing = Some(missing);
        } else {
            notes.push(format!(
                "sse_unheard={missing} (not exact here: collector_starts={} sse_connections={} fresh_start={} lagged={lagged})",
                self.collector_starts,
                sse.connections(),
                self.fresh_start
            ));
        }

        let stored_total = support::metric_in(&metrics, "citysense_readings_stored_total").context("no citysense_readings_stored_total")? as u64;
        let baseline = if self.collector_starts == 1 { Some(0) } else { self.stored_baseline };
        match baseline {
            Some(b) => {
                let distinct = (handed_out - skipped).saturating_sub(b);
                e.stored_total_mismatch = Some(stored_total.abs_diff(distinct));
                notes.push(format!("stored_total={stored_total} distinct_readings={distinct}"));
            }
            None => notes.push(format!("stored_total={stored_total} (not checked: {} collector starts, no baseline)", self.collector_starts)),
        }
        // Readings the running collector received again and deduplicated: the resends the check above saw through.
        notes.push(format!("resent={}", support::metric_in(&metrics, "citysense_readings_duplicate_total").unwrap_or(0.0)));

        let expected = crossings(&stored);
        e.crossings = expected.len() as u64;
        (_, e.alert_dup, e.alert_missing, e.alert_extra) = count_alerts(&get_json(self.http, "/api/v1/alerts")?, &expected)?;
        (e.webhook_keys, e.webhook_dup, e.webhook_missing, e.webhook_unkeyed, e.webhook_redelivered) = count_webhooks(&self.hooks.deliveries(), &expected);
        let lagged_rules = support::metric_in(&metrics, "citysense_rules_lagged_total").unwrap_or(0.0);
        if lagged_rules > 0.0 {
            notes.push(format!("rules_lagged={lagged_rules} (batches the rules never saw: alert_missing may follow)"));
        }

        if let Some(vm) = &self.victoria {
            let want: usize = stored.values().map(HashSet::len).sum();
            let mut samples = HashMap::new();
            // The sink follows the store; a value it never sends shows as vm_missing.
            let _ = wait_for("VictoriaMetrics to hold every stored value", Duration::from_secs(30), || {
                samples = vm_counter_samples(vm.port).ok()?;
                (samples.len() >= want).then_some(())
            });
            let (dup, extra, missing) = compare(&samples, &stored);
            (e.vm_dup, e.vm_missing) = (Some(dup), Some(missing + extra));
            notes.push(format!("vm_samples={}", samples.values().map(|c| *c as u64).sum::<u64>()));
        }
        // What this accounting adds to the scenario's run time.
        notes.push(format!("effects_s={:.1}", started.elapsed().as_secs_f64()));
        Ok((e, notes))
    }

    pub fn spawn_collector(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.collector_bin);
        cmd.arg("run").arg("--config").arg(self.dir.path().join("collector.toml")).env("RUST_LOG", "info,rumqttd=off").env("NO_COLOR", "1");
        let name = format!("collector-{}", now_ms());
        self.collector_log = self.dir.path().join(format!("{name}.log"));
        self.collector = Some(Proc::spawn(&name, &mut cmd, self.dir.path())?);
        self.collector_starts += 1;
        Ok(())
    }

    /// True once the collector answers on its HTTP port, false if it exited first.
    pub fn wait_collector_up(&mut self) -> Result<bool> {
        let (http, collector) = (self.http, self.collector.as_mut().expect("a collector was spawned"));
        wait_up("the collector's HTTP port", http, collector)
    }

    /// Starts the agent and waits for its status port; an agent that exits
    /// instead (a store it refuses to open) fails at once with its last words.
    pub fn start_agent(&mut self) -> Result<()> {
        self.spawn_agent()?;
        if !self.wait_agent_up()? {
            bail!("the agent exited at start; its log ends:\n{}", log_tail(&self.agent_log));
        }
        Ok(())
    }

    pub fn spawn_agent(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.agent_bin);
        // The poller's debug lines name each abandoned request (`powercut` counts them per run).
        cmd.arg("run").arg("--config").arg(self.dir.path().join("agent.toml")).env("NO_COLOR", "1").env("RUST_LOG", "info,agent::source::modbus::poller=debug");
        let name = format!("agent-{}", now_ms());
        self.agent_log = self.dir.path().join(format!("{name}.log"));
        self.agent = Some(Proc::spawn(&name, &mut cmd, self.dir.path())?);
        Ok(())
    }

    /// True once the agent answers on its status port, false if it exited first.
    pub fn wait_agent_up(&mut self) -> Result<bool> {
        let (status, agent) = (self.status, self.agent.as_mut().expect("an agent was spawned"));
        wait_up("the agent's status port", status, agent)
    }

    pub fn agent_status(&self) -> Result<Value> {
        get_json(self.status, "/status")
    }

    /// Waits until the collector has acknowledged everything the agent took in.
    pub fn drained(&self, limit: Duration) -> Result<Value> {
        wait_for("the agent's outbox to drain", limit, || {
            let s = self.agent_status().ok()?;
            let next = s["next_seq"].as_u64()?;
            (s["buffer_depth"] == 0 && s["acked_seq"].as_u64()? + 1 == next).then_some(s)
        })
    }

    /// The highest seq the collector's store holds as progress for the
    /// fault gateway (any epoch); 0 before it has any.
    pub fn progress(&self) -> Result<u64> {
        match get_json(self.http, "/api/v1/gateways/gw-fault/progress") {
            Ok(doc) => Ok(doc.as_array().map(|a| a.iter().filter_map(|s| s["acked_seq"].as_u64()).max().unwrap_or(0)).unwrap_or(0)),
            Err(e) if e.to_string().contains("404") => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub fn delivered(&self) -> u64 {
        metric(self.http, "citysense_readings_stored_total").unwrap_or(0.0) as u64
    }

    /// Stops the simulator (no more values are served), drains, stops the agent
    /// cleanly and accounts for every served value.
    pub fn finish(mut self, scenario: &str, notes: Vec<String>) -> Result<Report> {
        self.sim.stop()?;
        let status = self.drained(Duration::from_secs(90))?;
        let dropped = status["dropped_total"].as_u64().unwrap_or(0);
        // Failed reads since the last (re)start; a read that timed out may still
        // have moved the device's counter, so they are shown beside the result.
        let poll_errors: u64 = status["devices"].as_array().map(|d| d.iter().filter_map(|x| x["errors"].as_u64()).sum()).unwrap_or(0);
        // Requests that timed out, retried or not: each may have moved a
        // device's counter without a reading (one agent run throughout).
        let abandoned = status["abandoned_requests"].as_u64().context("no abandoned_requests in the agent's status")?;
        if let Some(mut a) = self.agent.take() {
            a.stop()?;
        }
        // The collector counts exactly the seqs it never received because the
        // agent reported them dropped; the agent counts what it removed from its
        // buffer unacknowledged, which can include a batch already in flight
        // that still arrived. So the collector's count must explain every
        // missing value, and the agent's must never be below it.
        let skipped = metric(self.http, "citysense_readings_dropped_at_agent_total")? as u64;
        let mut report = account(scenario, self.http, &self.counter_log, skipped, abandoned)?;
        report.notes = notes;
        report.notes.push(format!("agent_dropped={dropped} poll_errors={poll_errors}"));
        let handed_out = status["next_seq"].as_u64().unwrap_or(1) - 1;
        if self.only_counter {
            // The exact check: every seq the agent handed out (less those the
            // collector counted dropped) is a distinct counter value stored,
            // and the store's progress covers them all.
            let progress = self.progress()?;
            let short = (handed_out - skipped).saturating_sub(report.delivered).max(handed_out.saturating_sub(progress));
            report.notes.push(format!("handed_out={handed_out} stored={} progress={progress}", report.delivered));
            report.lost = report.lost.max(short);
        }
        let (effects, notes) = self.effects(handed_out, skipped)?;
        report.effects = effects;
        report.notes.extend(notes);
        if dropped < skipped {
            report.notes.push(format!("UNDER-REPORTED: agent says {dropped} dropped, collector missed {skipped}"));
            report.lost += skipped - dropped;
        }
        if let Some(mut c) = self.collector.take() {
            c.stop()?;
        }
        self.mount.take();
        self.keep_disk();
        Ok(report)
    }

    /// Drops the crash disk; with `CITYSENSE_KEEP_FAULTS` its durable image
    /// is first written to `crash-disk` beside the logs, so a store that
    /// lived on it can be opened after the run (it is gone once unmounted).
    pub fn keep_disk(&mut self) {
        if let Some(disk) = self.disk.take() {
            if std::env::var_os("CITYSENSE_KEEP_FAULTS").is_some() {
                if let Err(e) = disk.save(&self.dir.path().join("crash-disk")) {
                    eprintln!("cannot keep the crash disk's image: {e}");
                }
            }
        }
    }
}

fn start_mosquitto(conf: &Path, dir: &Path, port: u16) -> Result<Proc> {
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(conf);
    let p = Proc::spawn(&format!("mosquitto-{}", now_ms()), &mut cmd, dir).context("mosquitto is not installed: tests/faults/run installs it")?;
    wait_for_port(port, "mosquitto")?;
    Ok(p)
}

pub(crate) fn standard() -> Options {
    Options { external_broker: false, only_counter: false, devices: (2, 1, 1), interval: "250ms", max_bytes: "64MiB", outbox_fs_kib: None, crash_disk: None, victoria: false }
}

/// A small deterministic jitter so kills land at varied points of the pipeline.
pub(crate) fn jitter_ms(seed: &mut u64, lo: u64, hi: u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    lo + (*seed >> 33) % (hi - lo)
}

/// External Mosquitto killed for 30 s mid-stream, then restarted.
fn broker_outage(bins: &Bins) -> Result<Report> {
    let mut w = World::new("broker-outage", bins, Options { external_broker: true, ..standard() })?;
    w.start_collector()?;
    w.start_agent()?;
    wait_for("first readings stored", Duration::from_secs(30), || (w.delivered() > 0).then_some(()))?;
    let port: u16 = std::fs::read_to_string(&w.mosquitto_conf)?.split_whitespace().nth(1).unwrap().parse()?;
    w.mosquitto.take().unwrap().kill();
    let down = Instant::now();
    let mut peak_depth = 0;
    let mut oldest_s = 0.0;
    while down.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        let s = w.agent_status()?;
        if s["connected"] == true && down.elapsed() > Duration::from_secs(5) {
            bail!("agent reports a connection while the broker is down");
        }
        peak_depth = peak_depth.max(s["buffer_depth"].as_u64().unwrap_or(0));
        oldest_s = s["oldest_age_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    }
    if peak_depth == 0 || oldest_s < 20.0 {
        bail!("the agent did not buffer through the outage: peak depth {peak_depth}, oldest {oldest_s:.1} s");
    }
    w.mosquitto = Some(start_mosquitto(&w.mosquitto_conf, w.dir.path(), port)?);
    let back = Instant::now();
    w.drained(Duration::from_secs(60))?;
    let drain = back.elapsed().as_secs_f64();
    let notes = vec![format!("outage_s=30 backlog={peak_depth} oldest_s={oldest_s:.1} drain_s={drain:.2}")];
    w.finish("broker-outage", notes)
}

/// Three SIGKILLs of the agent at varied moments, each followed by a
/// restart; the readings excused are exactly those above what the outbox
/// held on reopening, and nothing it showed durable before the kill (see
/// `powercut`, which shares the loop).
fn agent_sigkill(bins: &Bins) -> Result<Report> {
    crate::powercut::agent_kills(bins, "agent-sigkill", 3, crate::powercut::seed(), false)
}

/// One SIGKILL of the collector (and its embedded broker), restarted 3 s
/// later. The agent, buffering meanwhile, is paused while the new collector
/// starts, so what the store held before the kill can be read off its
/// progress and `citysense_readings_stored_total` checked across the restart.
fn collector_sigkill(bins: &Bins) -> Result<Report> {
    let mut w = World::new("collector-sigkill", bins, standard())?;
    w.start_collector()?;
    w.start_agent()?;
    wait_for("first readings stored", Duration::from_secs(30), || (w.delivered() > 20).then_some(()))?;
    std::thread::sleep(Duration::from_millis(1500));
    w.collector.take().unwrap().kill();
    std::thread::sleep(Duration::from_secs(3));
    w.agent.as_mut().expect("agent running").pause(true)?;
    let restarted = w.start_collector().and_then(|_| w.record_baseline());
    w.agent.as_mut().expect("agent running").pause(false)?;
    restarted?;
    std::thread::sleep(Duration::from_secs(2));
    w.finish("collector-sigkill", vec![])
}

/// A long outage fills a 16 KiB buffer: the oldest readings are dropped, and
/// exactly those are reported, by the agent and at the collector.
fn buffer_full(bins: &Bins) -> Result<Report> {
    let opts = Options { only_counter: true, devices: (8, 6, 4), interval: "500ms", max_bytes: "16KiB", ..standard() };
    let mut w = World::new("buffer-full", bins, opts)?;
    w.start_agent()?;
    let s = wait_for("the buffer to overflow", Duration::from_secs(90), || {
        let s = w.agent_status().ok()?;
        (s["dropped_total"].as_u64()? > 100).then_some(s)
    })?;
    if s["buffer_bytes"].as_u64().unwrap_or(u64::MAX) > 16 * 1024 {
        bail!("the buffer holds more than max_bytes: {s}");
    }
    w.start_collector()?;
    std::thread::sleep(Duration::from_secs(1));
    w.finish("buffer-full", vec!["max_bytes=16KiB".into()])
}

/// The outbox's filesystem fills up during an outage: the agent keeps running
/// and says so in status, holds in memory what it could not write (sled can
/// accept a write and fail to put it on disk, so everything since the last
/// good flush is kept and written again), and carries on once space returns.
/// No loss window is granted: every served value must arrive.
fn disk_full(bins: &Bins) -> Result<Report> {
    let opts = Options { devices: (8, 6, 4), interval: "250ms", outbox_fs_kib: Some(2048), ..standard() };
    let mut w = World::new("disk-full", bins, opts)?;
    w.start_agent()?;
    let failing = wait_for("the agent to report the full disk", Duration::from_secs(120), || {
        let s = w.agent_status().ok()?;
        s["storage_error"].as_str().filter(|e| e.contains("No space left") || e.contains("StorageFull")).map(|e| (now_ms(), e.to_string()))
    })?;
    // Held readings wait in memory; the agent must still answer and keep polling.
    std::thread::sleep(Duration::from_secs(3));
    let s = w.agent_status()?;
    if s["storage_error"].is_null() {
        bail!("storage error cleared while the disk is still full: {s}");
    }
    w.mount.as_ref().unwrap().grow(65536)?;
    wait_for("the agent to recover once space returns", Duration::from_secs(60), || w.agent_status().ok().filter(|s| s["storage_error"].is_null()).map(|_| ()))?;
    w.start_collector()?;
    std::thread::sleep(Duration::from_secs(1));
    w.finish("disk-full", vec![format!("fs=2MiB enospc_seen={}", failing.1.contains("No space left"))])
}
