//! `citysense-faults [SCENARIO...]`: runs fault scenarios against the built
//! binaries and prints `SCENARIO lost=N duplicated=M delivered=K` per scenario;
//! exits 1 if any scenario lost or duplicated a reading (or could not run).

use std::process::ExitCode;

fn main() -> ExitCode {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = if names.is_empty() { faults::scenarios::ALL.to_vec() } else { names.iter().map(String::as_str).collect() };
    let bins = match faults::harness::Bins::locate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("citysense-faults: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for name in names {
        match faults::scenarios::run(name, &bins) {
            Ok(r) => {
                println!("{r}");
                failed |= !r.ok();
            }
            Err(e) => {
                println!("{name} error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
