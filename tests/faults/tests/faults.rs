//! The fault suite inside `cargo test`: every scenario against the real
//! binaries, one after another so they do not compete for the two cores.
//! Needs the workspace's binaries built (cargo test --workspace builds them)
//! and Mosquitto and VictoriaMetrics installed (tests/run installs them).

#[test]
fn every_fault_scenario_loses_and_duplicates_nothing() {
    let bins = faults::harness::Bins::locate().expect("binaries built by cargo test --workspace");
    let mut lines = Vec::new();
    for name in faults::scenarios::ALL {
        let r = faults::scenarios::run(name, &bins).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        println!("{r}");
        lines.push((r.ok(), r.to_string()));
    }
    let failed: Vec<&String> = lines.iter().filter(|(ok, _)| !ok).map(|(_, l)| l).collect();
    assert!(failed.is_empty(), "scenarios that lost or duplicated readings: {failed:#?}");
}
