//! Gateway clocks through the real broker and collector: two real agents
//! polling the simulated city, one whose clock reads 1970 (a real-time clock
//! reset before NTP) and one 2100. Their readings land on the collector's time
//! line, flagged and counted; the offsets show in the API and on
//! `health/{gateway}`; `latest` stays sane; retention deletes nothing because
//! of them; the `clock_skew` alert fires, and clears once a clock is set right.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector::store::lifecycle::Policy;
use collector::store::settings::KeepConfig;
use common::browser::{browser, until};
use common::*;
use rumqttc::QoS;
use serde_json::Value;
use shared::clock::Clock;
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(30);
const Y1970: i64 = 60_000;
const Y2100: i64 = 4_102_444_800_000;
/// Further off than any honest clock and transit time: decades.
const DECADES_MS: i64 = 20 * 365 * 86_400_000;

/// A clock that ticks with the machine's but is `shift` off it, until set right.
struct Shifted(AtomicI64);

impl Shifted {
    /// Reads `at` now, and goes on from there.
    fn reading(at: i64) -> Arc<Shifted> {
        Arc::new(Shifted(AtomicI64::new(at - now_ms())))
    }

    /// What NTP would do.
    fn set_right(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

impl Clock for Shifted {
    fn now_ms(&self) -> i64 {
        now_ms() + self.0.load(Ordering::SeqCst)
    }
}

/// The rule the test expects to fire: no `value`, so `[ingest.clock] max_offset`.
const RULES: &str = r#"
[[rule]]
id = "gateway-clock"
kind = "clock_skew"
severity = "warning"
"#;

/// The next health message of `gateway` that satisfies `ok`.
async fn health_of(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>, gateway: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let topic = shared::topics::health(gateway);
    let wait = async {
        loop {
            let (t, v) = rx.recv().await.expect("health subscription ends");
            if t == topic && ok(&v) {
                return v;
            }
        }
    };
    tokio::time::timeout(LIMIT, wait).await.unwrap_or_else(|_| panic!("no matching health message of {gateway}"))
}

async fn gateway(http: std::net::SocketAddr, id: &str) -> Value {
    let all = get_json(http, "/api/v1/gateways").await;
    all.as_array().unwrap().iter().find(|g| g["id"] == id).cloned().unwrap_or(Value::Null)
}

/// The open alerts of `rule`, by gateway.
async fn open_alerts(http: std::net::SocketAddr, rule: &str) -> Vec<Value> {
    let all = get_json(http, "/api/v1/alerts").await;
    all.as_array().unwrap().iter().filter(|a| a["rule"] == rule && a["state"] != "resolved").cloned().collect()
}

/// The simulated river (wl-001, wl-002), a collector, and a real agent for
/// each gauge: gw-1970 reads wl-001 with its clock in 1970, gw-2100 wl-002 in 2100.
struct SkewedCity {
    dir: tempfile::TempDir,
    _city: RunningCity,
    c: collector::Collector,
    agents: Vec<agent::Agent>,
    clocks: [(&'static str, &'static str, Arc<Shifted>); 2],
}

async fn skewed_city() -> SkewedCity {
    let dir = tempfile::tempdir().unwrap();
    let city = RunningCity::start(City { air: 0, traffic: 0, water: 2, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let c = collector(dir.path(), None, &format!("{}\n{RULES}", sim::run::catalogue_toml(&city.sensors()))).await;
    let clocks = [("gw-1970", "wl-001", Shifted::reading(Y1970)), ("gw-2100", "wl-002", Shifted::reading(Y2100))];
    let mut agents = Vec::new();
    for (gw, sensor, clock) in &clocks {
        let modbus = sim::run::modbus_toml(&[city.device(sensor).unwrap()], Duration::from_millis(200));
        let cfg = agent_config(dir.path(), gw, &c.mqtt_url, &modbus, None);
        agents.push(agent::Agent::start_with(cfg, agent::Parts { clock: clock.clone() }).await.unwrap());
    }
    SkewedCity { dir, _city: city, c, agents, clocks }
}

impl SkewedCity {
    async fn stop(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        self.c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_with_1970_and_2100_clocks_are_caught_not_trusted() {
    let started = now_ms();
    let city = skewed_city().await;
    let (c, agents, clocks) = (&city.c, &city.agents, &city.clocks);
    let http = c.http_addr;
    let mut health = json_feed(&c.mqtt_url, "health-watch", shared::topics::HEALTH_FILTER, QoS::AtMostOnce).await;

    // Readings land on the collector's time line, uncertain, counted.
    for (gw, sensor, _) in clocks {
        let points = wait_for(&format!("3 readings of {sensor}"), LIMIT, || async move {
            let v = get_json(http, &format!("/api/v1/series?sensor={sensor}&metric=water_level_m&from=0")).await;
            v["points"].as_array().filter(|p| p.len() >= 3).cloned()
        })
        .await;
        let now = now_ms();
        for p in &points {
            let ts = p["ts_ms"].as_i64().unwrap();
            assert!(ts >= started - 5_000 && ts <= now, "{gw}'s reading stored at {ts}, not on the collector's time ({started}..{now}): {p}");
            assert_eq!(p["quality"], "uncertain", "{gw}: {p}");
        }
        let sensors = get_json(http, "/api/v1/sensors").await;
        let latest = sensors.as_array().unwrap().iter().find(|s| s["id"] == *sensor).unwrap()["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == "water_level_m")
            .cloned()
            .unwrap();
        assert!(latest["ts_ms"].as_i64().unwrap() <= now_ms(), "latest of {sensor} is in the future: {latest}");
    }
    assert!(metric(http, "citysense_readings_clock_skew_total").await >= 6.0);

    // The offset, measured by the collector and by the agent (from the acks),
    // in the API and on health/: 1970 is behind (positive), 2100 ahead.
    for (gw, sign) in [("gw-1970", 1), ("gw-2100", -1)] {
        let g = wait_for(&format!("{gw}'s clock in /api/v1/gateways"), LIMIT, || async move {
            let g = gateway(http, gw).await;
            g["agent_clock"]["offset_ms"].as_i64().is_some().then_some(g)
        })
        .await;
        assert_eq!(g["clock_state"], "skewed", "{g}");
        assert!(g["clock_offset_ms"].as_i64().unwrap() * sign > DECADES_MS, "{g}");
        assert!(g["agent_clock"]["offset_ms"].as_i64().unwrap() * sign > DECADES_MS, "{g}");
        assert_eq!(g["agent_clock"]["synced"], gw == "gw-2100", "only a clock before the build is known to be unset: {g}");
        assert!(g["clock_skewed_readings"].as_u64().unwrap() >= 3, "{g}");
        let h = health_of(&mut health, gw, |h| h["clock"]["offset_ms"].is_i64()).await;
        assert!(h["clock"]["offset_ms"].as_i64().unwrap() * sign > DECADES_MS, "{h}");
        assert_eq!(h["clock"]["synced"], gw == "gw-2100", "{h}");
    }

    // The agent says so itself.
    let status = agent::status::fetch(&agents[0].status_addr.to_string()).await.unwrap();
    let clock = status.clock.unwrap();
    assert!(!clock.synced && clock.now_ms < 86_400_000, "{clock:?}");
    assert!(agent::status::render(&status).contains("NOT SYNCED"), "{}", agent::status::render(&status));
    assert!(agent::status::fetch(&agents[1].status_addr.to_string()).await.unwrap().clock.unwrap().synced);

    // One clock_skew alert per gateway, with the policy's limit.
    let alerts = wait_for("a clock_skew alert per gateway", LIMIT, || async move {
        let a = open_alerts(http, "gateway-clock").await;
        (a.len() == 2).then_some(a)
    })
    .await;
    let mut named: Vec<&str> = alerts.iter().map(|a| a["sensor"].as_str().unwrap()).collect();
    named.sort();
    assert_eq!(named, ["gw-1970", "gw-2100"], "{alerts:?}");
    assert!(alerts.iter().all(|a| a["threshold"] == 120.0 && a["severity"] == "warning"), "{alerts:?}");

    // Retention, run now with the default 30 days of raw samples, finds nothing
    // of theirs to delete: stamped 1970, it would all be gone.
    let before: Vec<usize> = stored_counts(http, clocks).await;
    let policy = Policy::new(KeepConfig::default(), vec![], &[]);
    let expired = c.store.expire(now_ms(), &|s, m| policy.keep(s, m)).unwrap();
    assert_eq!(expired.raw, 0, "retention deleted readings because of a wrong clock");
    let after = stored_counts(http, clocks).await;
    assert!(after.iter().zip(&before).all(|(a, b)| a >= b), "{before:?} → {after:?}");

    // NTP comes: the 1970 gateway's offset is sound again, its alert clears,
    // its readings are good again; the 2100 one's stays.
    clocks[0].2.set_right();
    wait_for("gw-1970's clock alert to clear", LIMIT, || async move {
        let open = open_alerts(http, "gateway-clock").await;
        (open.len() == 1 && open[0]["sensor"] == "gw-2100").then_some(())
    })
    .await;
    assert_eq!(gateway(http, "gw-1970").await["clock_state"], "ok");
    let fixed_at = now_ms();
    wait_for("a good reading of wl-001 once its clock is right", LIMIT, || async move {
        let v = get_json(http, &format!("/api/v1/series?sensor=wl-001&metric=water_level_m&from={fixed_at}")).await;
        v["points"].as_array().unwrap().iter().any(|p| p["quality"] == "good").then_some(())
    })
    .await;
    let h = health_of(&mut health, "gw-1970", |h| h["clock"]["synced"] == true).await;
    assert!(h["clock"]["now_ms"].as_i64().unwrap() > 1_700_000_000_000, "{h}");

    city.stop().await;
}

/// How many readings each gateway's sensor has stored.
async fn stored_counts(http: std::net::SocketAddr, clocks: &[(&str, &str, Arc<Shifted>)]) -> Vec<usize> {
    let mut out = Vec::new();
    for (_, sensor, _) in clocks {
        out.push(series_values(http, sensor, "water_level_m").await.len());
    }
    out
}

/// On the dashboard's gateway panel, as a wall or tablet shows it (no hover):
/// each gateway's clock against the collector's with the skewed one marked,
/// the agent that says its clock was never set, and a gateway's refused
/// readings with the sensor and its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_gateway_clocks_and_refused_readings() {
    let city = skewed_city().await;
    let http = city.c.http_addr;
    wait_for("both clocks measured, and the 1970 agent's health", LIMIT, || async move {
        let g = get_json(http, "/api/v1/gateways").await;
        let all = g.as_array().unwrap();
        (all.iter().filter(|g| g["clock_state"] == "skewed").count() == 2 && all.iter().any(|g| g["agent_clock"]["synced"] == false)).then_some(())
    })
    .await;
    // wl-001 is gw-1970's (first heard from it): another gateway's reading of it is refused.
    let mut intruder = FakeGateway::connect(&city.c.mqtt_url, "gw-intruder").await;
    let reading = shared::Reading { seq: shared::Seq(0), sensor: "wl-001".into(), metric: "water_level_m".into(), ts_ms: now_ms(), value: 9.9, quality: shared::Quality::Good };
    let seq = intruder.send(vec![reading]).await;
    intruder.wait_acked(seq, LIMIT).await;

    let (_driver, page) = browser(&city.dir.path().join("profile")).await;
    page.goto(&format!("http://{http}/")).await.unwrap();
    let row = |gw: &str, what: &str| format!("document.querySelector('#gateways tr[data-gateway=\"{gw}\"] {what}')");
    let ahead = until(&page, "gw-2100's clock, ahead", &format!("{}?.textContent", row("gw-2100", "td.clock[data-clock=skewed].warn"))).await;
    assert!(ahead.as_str().unwrap().starts_with("+7") && ahead.as_str().unwrap().contains(" y ahead"), "{ahead}");
    let behind = until(&page, "gw-1970's clock, behind and not synced", &format!("{}?.textContent", row("gw-1970", "td.clock[data-clock=skewed][data-synced=false]"))).await;
    assert!(behind.as_str().unwrap().contains(" y behind") && behind.as_str().unwrap().contains("not synced"), "{behind}");
    let why = until(&page, "gw-1970's clock explained", "document.querySelector('tr[data-gateway-why=\"gw-1970\"] .gw-clock')?.textContent").await;
    assert!(why.as_str().unwrap().contains("never set"), "{why}");
    let refused = until(&page, "the intruder's refused reading", "document.querySelector('tr[data-gateway-why=\"gw-intruder\"] .gw-refused')?.textContent").await;
    assert!(refused.as_str().unwrap().contains("wl-001") && refused.as_str().unwrap().contains("gw-1970"), "{refused}");
    let count = until(&page, "the refused count", &format!("{}?.textContent", row("gw-intruder", "td.refused.warn"))).await;
    assert_eq!(count, "1");
    // The wall has no gateway panel: the strip under the header names the clocks.
    let strip = until(&page, "skewed clocks in the issues strip", "document.querySelector('#gw-issues [data-gateway=\"gw-2100\"]')?.textContent").await;
    assert!(strip.as_str().unwrap().contains("ahead"), "{strip}");
    let png = page.screenshot().await.unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| workspace().join("target")).join("dashboard");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("clocks.png"), png).unwrap();
    page.close().await.unwrap();
    city.stop().await;
}
