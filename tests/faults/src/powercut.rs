//! Power cuts (issue 16): the agent's outbox, or the collector's store, on a
//! crash disk (`citysense-powercut`), and at random points under load the
//! process is killed with SIGKILL, every write not yet fsynced is dropped
//! (files, and directory entries not followed by a directory fsync) and the
//! disk is mounted again before a restart. The cut points come from a seeded
//! generator; the seed is in the report, and `CITYSENSE_FAULT_SEED` replays it.
//!
//! The agent's bound, checked exactly per cut: the readings that survive a
//! cut are every seq up to the `durable_seq` its status showed last before
//! the kill, and the readings lost are exactly those handed out above what
//! survived. Per agent run (from start to kill) the simulator's log gives `T`,
//! the counter values it served; the outbox says what survived (`next_seq`
//! on reopening, logged as "outbox opened"); so `T - survived` readings are
//! excused, and exactly those, no more, must be missing from the store.
//!
//! The collector's: it never acknowledges a reading a cut then loses. The
//! agent's `acked_seq` once the collector is dead is everything it was told;
//! the reopened collector's progress must be at or above it, and in the end
//! every seq the agent handed out must be stored (the agent resends the
//! rest), and no more served values missing than reads the agent abandoned.
//!
//! A read the agent abandoned (no answer within its timeout, retried or
//! not) may still have been served a counter value that no reading carries:
//! the agent counts them, and names each in its log (per run, exact across
//! a kill), and each excuses at most one missing value.
//!
//! Both must reopen their stores after every cut by themselves.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::harness::{get_json, now_ms, served, wait_for, Bins, Cuts, Report};
use crate::scenarios::{jitter_ms, log_tail, standard, CrashAt, Options, World};

/// Cuts of each kind inside `cargo test`.
pub const SUITE_CUTS: usize = 3;

/// `CITYSENSE_FAULT_SEED`, or the clock.
pub fn seed() -> u64 {
    std::env::var("CITYSENSE_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| now_ms() as u64)
}

/// Only counters, so every reading is a counter value the simulator logged
/// and seqs count them one for one; 9 devices every 100 ms.
fn options(at: CrashAt) -> Options {
    Options { only_counter: true, devices: (4, 3, 2), interval: "100ms", crash_disk: Some(at), ..standard() }
}

/// `next_seq - 1` as the outbox opened, from the agent's log: every seq up to
/// it survived. None if the agent died before opening it.
fn opened_at(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("outbox opened"))?;
    let v = line.split_whitespace().find_map(|w| w.strip_prefix("next_seq="))?;
    v.parse::<u64>().ok().map(|n| n - 1)
}

/// Where the next cut lands: a quarter of the time while the process starts
/// (opening its store), otherwise under load up to 2.5 s after it is up.
fn early(seed: &mut u64) -> bool {
    jitter_ms(seed, 0, 4) == 0
}

/// One agent run between a start and its kill.
struct Run {
    started_ms: i64,
    killed_ms: i64,
    /// The seq the outbox held on opening (None: killed before it opened).
    opened: Option<u64>,
    /// Its log, where the poller names each request it abandoned.
    log: std::path::PathBuf,
}

/// Requests a run's agent abandoned (no answer within its timeout, retried
/// or not), one debug line each in its log: the log is written as it goes,
/// so a SIGKILL loses none of them, unlike a status read before the kill.
fn abandoned_in(log: &Path) -> u64 {
    std::fs::read_to_string(log).map(|t| t.lines().filter(|l| l.contains("request abandoned")).count() as u64).unwrap_or(0)
}

/// `cuts` agent kills, each with a power cut of its outbox disk, or (`power`
/// false: the `agent-sigkill` scenario) a SIGKILL alone, which keeps the page
/// cache; either way with the same exact accounting.
pub fn agent(bins: &Bins, cuts: usize, seed0: u64) -> Result<Report> {
    agent_kills(bins, "agent-powercut", cuts, seed0, true)
}

pub fn agent_kills(bins: &Bins, scenario: &str, cuts: usize, seed0: u64, power: bool) -> Result<Report> {
    // The plain kills also run the InfluxDB sink into VictoriaMetrics: the
    // collector runs throughout, so each value must be there exactly once.
    let opts = if power { options(CrashAt::Outbox) } else { Options { crash_disk: None, victoria: true, ..options(CrashAt::Outbox) } };
    let mut w = World::new(scenario, bins, opts)?;
    w.start_collector()?;
    let mut seed = seed0;
    let mut tally = Cuts::default();
    let mut runs: Vec<Run> = Vec::new();
    // The highest seq shown durable before a kill, not yet checked against a reopening.
    let mut must_survive = 0u64;
    let mut lost_durable = Vec::new();
    for cut in 0..=cuts {
        let started_ms = now_ms();
        w.spawn_agent()?;
        let kill_early = cut < cuts && early(&mut seed);
        let mut up = false;
        if kill_early {
            std::thread::sleep(Duration::from_millis(jitter_ms(&mut seed, 1, 300)));
        } else if !w.wait_agent_up()? {
            tally.reopen_failures += 1;
            return Ok(failed(scenario, tally, seed0, &format!("after cut {cut} the agent did not start:\n{}", log_tail(&w.agent_log))));
        } else {
            up = true;
        }
        let mut opened = None;
        if up {
            opened = opened_at(&w.agent_log);
            check_reopened(opened, cut, &mut must_survive, &mut tally, &mut lost_durable);
        }
        if cut == cuts {
            runs.push(Run { started_ms, killed_ms: i64::MAX, opened, log: w.agent_log.clone() });
            break;
        }
        if up {
            std::thread::sleep(Duration::from_millis(jitter_ms(&mut seed, 300, 2500)));
            // What status shows durable was durable at the kill, 0-20 ms later
            // (polls arriving meanwhile are the window).
            if let Some(d) = w.agent_status().ok().and_then(|s| s["durable_seq"].as_u64()) {
                must_survive = must_survive.max(d);
            }
            std::thread::sleep(Duration::from_millis(jitter_ms(&mut seed, 0, 20)));
        }
        let mut agent = w.agent.take().expect("agent running");
        if !agent.is_running() {
            tally.reopen_failures += 1;
            return Ok(failed(scenario, tally, seed0, &format!("before cut {cut} the agent exited by itself:\n{}", log_tail(&w.agent_log))));
        }
        agent.kill();
        let killed_ms = now_ms();
        if !up {
            // Killed while starting: it may or may not have opened the outbox.
            opened = opened_at(&w.agent_log);
            check_reopened(opened, cut, &mut must_survive, &mut tally, &mut lost_durable);
        }
        runs.push(Run { started_ms, killed_ms, opened, log: w.agent_log.clone() });
        if let Some(disk) = w.disk.as_mut() {
            disk.power_cut().with_context(|| format!("cut {cut}"))?;
        }
        tally.cuts += 1;
    }

    // Drain, stop, and account per run.
    w.sim.stop()?;
    let status = w.drained(Duration::from_secs(90))?;
    let last = status["next_seq"].as_u64().ok_or_else(|| anyhow!("no next_seq in {status}"))? - 1;
    let poll_errors: u64 = status["devices"].as_array().map(|d| d.iter().filter_map(|x| x["errors"].as_u64()).sum()).unwrap_or(0);
    let abandoned_last = status["abandoned_requests"].as_u64().context("no abandoned_requests in the agent's status")?;
    let stored = stored_values(&w, &w.counter_log)?;
    let served = served(&w.counter_log)?;
    let mut missing_total = 0;
    let mut excused_total = 0;
    let mut abandoned_total = 0;
    let mut mismatches = Vec::new();
    let opened_runs: Vec<usize> = (0..runs.len()).filter(|i| runs[*i].opened.is_some()).collect();
    for (i, run) in runs.iter().enumerate() {
        let in_run = |ts: i64| ts > run.started_ms && ts <= run.killed_ms;
        let mut taken = 0u64;
        let mut missing = 0u64;
        let mut which = Vec::new();
        for (sensor, values) in &served {
            for (v, ts) in values.iter().filter(|(_, ts)| in_run(*ts)) {
                taken += 1;
                if !stored.contains(&(sensor.clone(), *v)) {
                    missing += 1;
                    which.push(format!("{sensor}={v}@{ts}"));
                }
            }
        }
        // What survived of this run's seqs: up to the next opening, or the end.
        let survived = match run.opened {
            Some(o) => {
                let next = opened_runs.iter().find(|j| **j > i).and_then(|j| runs[*j].opened).unwrap_or(last);
                next.saturating_sub(o)
            }
            None => 0,
        };
        // Of what was served in this run and did not survive, a value each
        // of the requests the agent abandoned (it served them, the agent
        // never took the answer: no reading, no seq); the rest are the
        // readings the kill lost inside the window.
        let abandoned = abandoned_in(&run.log);
        let gone = taken.saturating_sub(survived);
        let excused = gone.saturating_sub(abandoned);
        if i + 1 < runs.len() {
            tally.excused.push(excused);
        }
        // Exact: the values missing are the ones served that did not
        // survive, no more and no fewer. Fewer happens only when a cut lost
        // seqs the collector already had (counted above against
        // `durable_seq`) or when an abandoned request was never served.
        if missing != gone {
            which.truncate(5);
            mismatches.push(format!(
                "run {i} ({}..{} ms): {taken} served, {survived} survived the cut, {abandoned} requests abandoned, {missing} missing from the store: {}",
                run.started_ms,
                run.killed_ms,
                which.join(" ")
            ));
            tally.lost_beyond_window += missing.saturating_sub(gone);
        }
        if i + 1 == runs.len() && abandoned != abandoned_last {
            mismatches.push(format!("the last run's log names {abandoned} abandoned requests, its status {abandoned_last}"));
        }
        missing_total += missing;
        excused_total += excused;
        abandoned_total += abandoned.min(gone);
    }
    if let Some(mut a) = w.agent.take() {
        a.stop()?;
    }
    let (effects, notes) = w.effects(last, 0)?;
    let mut report = Report { scenario: scenario.into(), delivered: stored.len() as u64, in_kill_window: excused_total, abandoned: abandoned_total, effects, ..Default::default() };
    report.notes.extend(notes);
    report.lost = missing_total.saturating_sub(excused_total + abandoned_total);
    let per = if power { "excused_per_cut" } else { "excused_per_kill" };
    report.notes.insert(0, format!("seed={seed0} {per}={} poll_errors={poll_errors}", join(&tally.excused)));
    report.notes.extend(lost_durable);
    report.notes.extend(mismatches);
    report.cuts = Some(tally);
    if let Some(mut c) = w.collector.take() {
        c.stop()?;
    }
    w.keep_disk();
    Ok(report)
}

pub fn collector(bins: &Bins, cuts: usize, seed0: u64) -> Result<Report> {
    let mut w = World::new("collector-powercut", bins, options(CrashAt::Store))?;
    w.start_collector()?;
    w.start_agent()?;
    wait_for("first readings stored", Duration::from_secs(30), || (w.delivered() > 0).then_some(()))?;
    let mut seed = seed0;
    let mut tally = Cuts::default();
    let mut must_hold = 0u64;
    let mut shortfalls = Vec::new();
    for cut in 0..cuts {
        if cut > 0 {
            w.spawn_collector()?;
        }
        let up = if cut > 0 && early(&mut seed) {
            std::thread::sleep(Duration::from_millis(jitter_ms(&mut seed, 1, 300)));
            false
        } else if !w.wait_collector_up()? {
            tally.reopen_failures += 1;
            return Ok(failed("collector-powercut", tally, seed0, &format!("after cut {cut} the collector did not start:\n{}", log_tail(&w.collector_log))));
        } else {
            true
        };
        if up {
            check_progress(&w, cut, &mut must_hold, &mut tally, &mut shortfalls)?;
            std::thread::sleep(Duration::from_millis(jitter_ms(&mut seed, 300, 2500)));
        }
        let mut collector = w.collector.take().expect("collector running");
        if !collector.is_running() {
            tally.reopen_failures += 1;
            return Ok(failed("collector-powercut", tally, seed0, &format!("before cut {cut} the collector exited by itself:\n{}", log_tail(&w.collector_log))));
        }
        collector.kill();
        // With the collector (and its broker) dead, no ack is on its way: the
        // agent's acked_seq is every ack it ever got.
        let acked = w.agent_status()?["acked_seq"].as_u64().unwrap_or(0);
        must_hold = must_hold.max(acked);
        w.disk.as_mut().expect("crash disk").power_cut().with_context(|| format!("cut {cut}"))?;
        tally.cuts += 1;
    }
    w.spawn_collector()?;
    if !w.wait_collector_up()? {
        tally.reopen_failures += 1;
        return Ok(failed("collector-powercut", tally, seed0, &format!("after the last cut the collector did not start:\n{}", log_tail(&w.collector_log))));
    }
    check_progress(&w, cuts, &mut must_hold, &mut tally, &mut shortfalls)?;
    let acked_short = tally.acked_then_lost;
    let mut report = w.finish("collector-powercut", vec![format!("seed={seed0}")])?;
    // `finish` checks every seq the agent handed out is stored (and the
    // store's progress past them), and that no more served values are
    // missing than requests the agent abandoned. Nothing else excuses a
    // missing reading here: the agent deletes only on an ack.
    tally.acked_then_lost = acked_short.max(report.lost);
    report.notes.extend(shortfalls);
    report.cuts = Some(tally);
    Ok(report)
}

/// An agent's outbox as it opened after a cut against what the last agent
/// showed durable before it: every seq up to it must have survived.
fn check_reopened(opened: Option<u64>, cut: usize, must_survive: &mut u64, tally: &mut Cuts, notes: &mut Vec<String>) {
    if let Some(o) = opened {
        if o < *must_survive {
            notes.push(format!("after cut {cut}: durable up to seq {must_survive}, only {o} survived"));
            tally.lost_beyond_window += *must_survive - o;
        }
        *must_survive = o;
    }
}

/// The reopened collector's progress against every ack the agent got.
fn check_progress(w: &World, cut: usize, must_hold: &mut u64, tally: &mut Cuts, shortfalls: &mut Vec<String>) -> Result<()> {
    let progress = w.progress()?;
    if progress < *must_hold {
        shortfalls.push(format!("cut {cut}: the agent was told seq {must_hold} was stored, the reopened store holds up to {progress}"));
        tally.acked_then_lost += *must_hold - progress;
    }
    *must_hold = 0;
    Ok(())
}

/// Every (sensor, counter value) the collector stored.
fn stored_values(w: &World, log: &Path) -> Result<HashSet<(String, u64)>> {
    let mut out = HashSet::new();
    let sensors: HashMap<String, Vec<(u64, i64)>> = served(log)?;
    for sensor in sensors.keys() {
        let doc = get_json(w.http, &format!("/api/v1/series?sensor={sensor}&metric=counter&from=0"))?;
        for p in doc["points"].as_array().ok_or_else(|| anyhow!("no points for {sensor}"))? {
            out.insert((sensor.clone(), p["value"].as_f64().unwrap_or(-1.0) as u64));
        }
    }
    Ok(out)
}

fn failed(scenario: &str, cuts: Cuts, seed: u64, why: &str) -> Report {
    Report { scenario: scenario.into(), notes: vec![format!("seed={seed}"), why.replace('\n', "\n    ")], cuts: Some(cuts), ..Default::default() }
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}
