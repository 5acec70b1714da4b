//! The store's upkeep under power cuts: packing closed hours into their
//! series' streams, rolling minutes up and deleting what is past retention,
//! on the crash disk (`tests/powercut`: what was not fsynced is gone after
//! a cut). A child process (this test binary run again) writes hours of
//! samples for a few series, syncs each, then rolls up, packs and expires;
//! the parent kills it with SIGKILL and cuts the power, half of the time
//! as soon as the child says it is packing. Each new child first checks
//! every hour a child logged as synced: all its samples back bit for bit,
//! and its minute rollups once packed, or, for an hour a retention pass had
//! started to delete, nothing of it. Needs root (or fusermount3) and
//! /dev/fuse, as the fault suite does.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector::store::{Keep, Level, RedbStore, Store, Write, PACK_AFTER_MS};
use shared::{Quality, Reading, Seq};

const CHILD_STORE: &str = "CITYSENSE_TEST_STORE";
const CHILD_LOG: &str = "CITYSENSE_TEST_STORE_LOG";
const CHILD_VERIFY_ONLY: &str = "CITYSENSE_TEST_STORE_VERIFY_ONLY";

const HOUR: i64 = 3_600_000;
const H0: i64 = 1_700_006_400_000;
const SERIES: u64 = 8;
/// Hours kept by each retention pass; one runs after every 4th hour.
const KEEP_HOURS: i64 = 6;
const CUTS: usize = 12;

fn main() {
    if let Ok(store) = std::env::var(CHILD_STORE) {
        let log = PathBuf::from(std::env::var(CHILD_LOG).expect("log path"));
        child(Path::new(&store), &log, std::env::var(CHILD_VERIFY_ONLY).is_ok());
        return;
    }
    parent();
    println!("test packing_and_retention_survive_power_cuts ... ok");
}

fn sensor(s: u64) -> String {
    format!("aq-{s}")
}

/// Sample `i` of hour `h` of series `s`: a poll every second with a few ms
/// of latency; values on four paths (decimals, f32 at 0.1, noisy f32, f64).
fn sample(s: u64, h: i64, i: i64) -> (i64, f64) {
    let ts = H0 + h * HOUR + i * 1000 + (i * 7 + s as i64) % 9;
    let k = (s as i64 * 7919 + h * 104_729 + i * 31) % 997;
    let v = match s % 4 {
        0 => k as f64 / 100.0,
        1 => (k as f32 / 10.0) as f64,
        2 => ((k as f32).sqrt() * 1.000_1) as f64,
        _ => (k as f64).sqrt() / 3.0,
    };
    (ts, v)
}

/// What the log says: hours synced, packed, and the retention cutoffs
/// (hour indexes) passes started and finished.
#[derive(Default, Debug)]
struct Logged {
    synced: Vec<i64>,
    packed: Vec<i64>,
    expiring: i64,
    expired: i64,
    last_line: String,
    lines: usize,
}

fn read_log(log: &Path) -> Logged {
    let mut l = Logged { expiring: i64::MIN, expired: i64::MIN, ..Logged::default() };
    for line in fs::read_to_string(log).unwrap_or_default().lines() {
        let (what, n) = line.split_once(' ').expect("log line");
        let n: i64 = n.parse().expect("hour");
        match what {
            "synced" => l.synced.push(n),
            "packed" => l.packed.push(n),
            "expiring" => l.expiring = l.expiring.max(n),
            "expired" => l.expired = l.expired.max(n),
            _ => {}
        }
        l.last_line = line.to_string();
        l.lines += 1;
    }
    l
}

/// One write call per line: a child killed between a line's text and its
/// newline would leave the next child's line glued to it.
fn note(log: &Path, line: String) {
    let mut f = OpenOptions::new().create(true).append(true).open(log).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn child(dir: &Path, log: &Path, verify_only: bool) {
    let st = RedbStore::open(dir).unwrap_or_else(|e| panic!("the store does not open after a cut: {e}"));
    let logged = read_log(log);
    for &h in &logged.synced {
        let (from, to) = (H0 + h * HOUR, H0 + (h + 1) * HOUR - 1);
        for s in 0..SERIES {
            let got: Vec<(i64, u64)> = st.query(&sensor(s), "pm25", from, to, usize::MAX).unwrap().iter().map(|x| (x.ts_ms, x.value.to_bits())).collect();
            if h < logged.expiring && (h < logged.expired || got.is_empty()) {
                assert!(got.is_empty(), "hour {h} of {} is past a finished retention pass yet {} samples are left", sensor(s), got.len());
                continue;
            }
            let want: Vec<(i64, u64)> = (0..3600).map(|i| sample(s, h, i)).map(|(t, v)| (t, v.to_bits())).collect();
            assert!(got == want, "hour {h} of {}: {} samples back of {}, or not bit for bit", sensor(s), got.len(), want.len());
            if logged.packed.contains(&h) {
                let minutes = st.rollups(&sensor(s), "pm25", Level::Minute, from, to).unwrap();
                assert_eq!((minutes.len(), minutes.iter().map(|m| m.count).sum::<u32>()), (60, 3600), "minute rollups of hour {h} of {}", sensor(s));
            }
        }
    }
    println!("verified {} hours", logged.synced.len());
    if verify_only {
        return;
    }
    let mut seq = 0;
    for h in logged.synced.iter().max().map_or(0, |h| h + 1).. {
        for part in 0..4 {
            let readings: Vec<Reading> = (0..SERIES)
                .flat_map(|s| (part * 900..(part + 1) * 900).map(move |i| (s, i)))
                .map(|(s, i)| {
                    seq += 1;
                    let (ts_ms, value) = sample(s, h, i);
                    Reading { seq: Seq(seq), sensor: sensor(s).into(), metric: "pm25".into(), ts_ms, value, quality: Quality::Good }
                })
                .collect();
            st.write(&Write { batches: vec![("gw-cut".into(), Arc::new(readings))], progress: vec![], forget: vec![] }).unwrap();
        }
        st.sync().unwrap();
        note(log, format!("synced {h}"));
        st.roll_up().unwrap();
        note(log, format!("packing {h}"));
        st.pack(H0 + (h + 1) * HOUR + PACK_AFTER_MS).unwrap();
        note(log, format!("packed {h}"));
        if h % 4 == 3 {
            let cutoff = h + 1 - KEEP_HOURS;
            note(log, format!("expiring {cutoff}"));
            let keep = |_: &str, _: &str| Keep { raw_ms: Some(KEEP_HOURS * HOUR), minute_ms: Some(KEEP_HOURS * HOUR), hour_ms: None };
            st.expire(H0 + (h + 1) * HOUR, &keep).unwrap();
            note(log, format!("expired {cutoff}"));
        }
    }
}

fn spawn(store: &Path, log: &Path, out: &Path, verify_only: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD_STORE, store).env(CHILD_LOG, log);
    if verify_only {
        cmd.env(CHILD_VERIFY_ONLY, "1");
    }
    let out = fs::File::create(out).unwrap();
    cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap()
}

/// Waits until `ready` holds, failing with the child's output if it exits first.
fn wait_child(child: &mut Child, out: &Path, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited ({status}) before {what}:\n{}", fs::read_to_string(out).unwrap_or_default());
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no {what} within 120 s:\n{}", fs::read_to_string(out).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn parent() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("disk");
    fs::create_dir(&mnt).unwrap();
    let mut disk = powercut::CrashDisk::mount(&mnt).expect("mounting the crash disk (root or fusermount3, and /dev/fuse)");
    let (store, log) = (mnt.join("store"), tmp.path().join("log"));
    let mut rng = 0x5eed_u64;
    let mut next = |n: u64| {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % n
    };
    let mut in_pack = 0;
    for cut in 0..CUTS {
        let out = tmp.path().join(format!("child-{cut}.out"));
        let mut child = spawn(&store, &log, &out, false);
        wait_child(&mut child, &out, "its check of the hours before", || fs::read_to_string(&out).unwrap_or_default().contains("verified"));
        if cut % 2 == 0 {
            // Within 20 ms of the child starting a pack.
            let before = read_log(&log).lines;
            wait_child(&mut child, &out, "a pack", || read_log(&log).lines > before && fs::read_to_string(&log).unwrap().lines().skip(before).any(|l| l.starts_with("packing")));
            std::thread::sleep(Duration::from_millis(next(20)));
        } else {
            std::thread::sleep(Duration::from_millis(200 + next(1500)));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited ({status}) before cut {cut}:\n{}", fs::read_to_string(&out).unwrap_or_default());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let l = read_log(&log);
        in_pack += usize::from(l.last_line.starts_with("packing") || l.last_line.starts_with("expiring"));
        disk.power_cut().unwrap();
    }
    let out = tmp.path().join("check.out");
    let mut child = spawn(&store, &log, &out, true);
    let status = child.wait().unwrap();
    let output = fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "after the last cut:\n{output}");
    let l = read_log(&log);
    println!("{CUTS} cuts, {in_pack} during a pack or retention pass; {} hours synced, {} packed; {}", l.synced.len(), l.packed.len(), output.trim());
    assert!(l.packed.len() >= CUTS, "the children packed {} hours in {CUTS} runs", l.packed.len());
}
