//! Modbus RTU end to end over a virtual serial line (a socat pty pair):
//! simulator units on one end, the agent on the other, readings at the
//! collector. A unit that never answers costs its own timeout and nothing more.

mod common;

use std::time::Duration;

use common::*;
use sim::{City, RunningCity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_travel_over_a_serial_line_and_a_dead_unit_stalls_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
    let _socat = Child(
        std::process::Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .spawn()
            .expect("socat (Debian package socat; ./tests/run installs it)"),
    );
    wait_for("the pty pair", Duration::from_secs(10), || {
        let ok = a.exists() && b.exists();
        async move { ok.then_some(()) }
    })
    .await;

    let plan = City { air: 2, traffic: 1, water: 1, noise: 0 };
    let c = collector(dir.path(), None, &sim::run::catalogue_toml(&plan.sensors())).await;
    let city = RunningCity::start(plan, None, Duration::from_secs(1)).await.unwrap();
    sim::modbus::serve_rtu(&a.display().to_string(), 19200, city.devices.iter().map(|d| d.device.clone()).collect()).unwrap();

    let line = format!("rtu://{}?baud=19200&parity=N&stop=1", b.display());
    let devices: Vec<_> = city.devices.iter().collect();
    let mut sources = sim::run::modbus_toml_where(&devices, Duration::from_millis(300), Some(&line), |_| true);
    // A unit nobody answers for, on the same line.
    sources.push_str(&format!(
        "[[modbus]]\nsensor = \"dead-009\"\naddress = \"{line}\"\nunit = 9\ninterval = \"300ms\"\ntimeout = \"200ms\"\nretries = 0\n  [[modbus.point]]\n  metric = \"x\"\n  table = \"holding\"\n  address = 0\n\n"
    ));
    let cfg = agent_config(dir.path(), "gw-serial", &c.mqtt_url, &sources, None);
    let agent = agent::Agent::start(cfg).await.unwrap();

    for (sensor, metric, value) in [("aq-001", "pm25", 88.25), ("aq-002", "no2", 12.5), ("tr-001", "speed_kmh", 61.5), ("wl-001", "water_level_m", 2.125)] {
        city.control.force(sensor, metric, value);
        wait_for(&format!("{sensor}/{metric} = {value} over RTU"), Duration::from_secs(30), || async move {
            latest(c.http_addr, sensor, metric).await.filter(|v| (v - value).abs() < 1e-9)
        })
        .await;
    }
    for sensor in ["aq-001", "aq-002", "tr-001", "wl-001"] {
        let values = wait_for(&format!("{sensor} counter over RTU"), Duration::from_secs(30), || async move {
            let v = series_values(c.http_addr, sensor, "counter").await;
            (v.len() >= 5).then_some(v)
        })
        .await;
        assert!(values.windows(2).all(|w| w[1] > w[0]), "{sensor}: {values:?}");
    }
    let dead = agent.devices.iter().find(|d| d.sensor == "dead-009").unwrap().snapshot();
    assert!(dead.errors > 0 && dead.polls == 0, "{dead:?}");
    assert!(dead.last_error.unwrap_or_default().contains("no answer within 200ms"));
    agent.shutdown().await;
    c.shutdown().await;
}
