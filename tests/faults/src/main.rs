//! `citysense-faults [SCENARIO...]`: runs fault scenarios against the built
//! binaries and prints `SCENARIO lost=N duplicated=M delivered=K ...` per
//! scenario, with the effects users see (`feed_dup`, `sse_dup`,
//! `stored_total_mismatch`, `alert_dup`, `webhook_dup`, `vm_dup`, and what is
//! missing where that is exact); exits 1 if any scenario lost or duplicated a
//! reading or an effect (or could not run).
//!
//! `citysense-faults --soak N`: N power cuts, half of the agent's outbox disk
//! and half of the collector's store disk, then one line
//! `cuts=N lost_beyond_window=0 acked_then_lost=0 reopen_failures=0`.
//! `CITYSENSE_FAULT_SEED` replays a run's cut points.

use std::process::ExitCode;
use std::time::Instant;

use faults::harness::{Cuts, Report};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bins = match faults::harness::Bins::locate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("citysense-faults: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(n) = args.iter().position(|a| a == "--soak").map(|i| args.get(i + 1).and_then(|n| n.parse::<usize>().ok())) {
        let Some(n) = n else {
            eprintln!("citysense-faults: --soak needs a number of cuts");
            return ExitCode::from(2);
        };
        return soak(&bins, n);
    }
    let names: Vec<&str> = if args.is_empty() { faults::scenarios::ALL.to_vec() } else { args.iter().map(String::as_str).collect() };
    let mut failed = false;
    for name in names {
        failed |= !print(name, faults::scenarios::run(name, &bins));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a scenario's line; true if it passed.
fn print(name: &str, r: anyhow::Result<Report>) -> bool {
    match r {
        Ok(r) => {
            println!("{r}");
            r.ok()
        }
        Err(e) => {
            println!("{name} error: {e:#}");
            false
        }
    }
}

fn soak(bins: &faults::harness::Bins, n: usize) -> ExitCode {
    let started = Instant::now();
    let seed = faults::powercut::seed();
    println!("soak: {n} cuts, seed={seed}");
    let mut total = Cuts::default();
    let mut ok = true;
    let agent_cuts = n - n / 2;
    for (name, r) in [("agent-powercut", faults::powercut::agent(bins, agent_cuts, seed)), ("collector-powercut", faults::powercut::collector(bins, n / 2, seed.wrapping_add(1)))] {
        if let Ok(r) = &r {
            total.add(r.cuts.as_ref().unwrap_or(&Cuts::default()));
        }
        ok &= print(name, r);
    }
    println!("{total} duration_s={:.0}", started.elapsed().as_secs_f64());
    if ok && total.cuts == n as u64 && total.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
