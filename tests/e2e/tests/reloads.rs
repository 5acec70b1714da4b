//! A refused config reload seen from the operations centre: the real agent
//! binary polls the simulated river for a collector; SIGHUP with a broken
//! file, then with one renaming the gateway, is refused, and
//! `/api/v1/gateways` shows each refusal with its reasons (from the agent's
//! `health/`) while the gateway keeps running the config it had and its
//! readings keep being stored; a good file reloaded clears it.

mod common;

use std::time::Duration;

use common::reloading::{gateway_view, ReloadingAgent};
use common::*;
use serde_json::Value;
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(30);
const GW: &str = "gw-cabinet";

/// The gateway's `config` in the API once `ok` holds for it.
async fn config_when(http: std::net::SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, LIMIT, || {
        let ok = &ok;
        async move {
            let g = gateway_view(http, GW).await;
            ok(&g["config"]).then_some(g)
        }
    })
    .await
}

/// Waits until the collector has stored `more` readings of the gateway beyond `from`.
async fn storing(http: std::net::SocketAddr, from: u64, more: u64) {
    wait_for(&format!("{more} more readings of {GW} stored"), LIMIT, || async move { (gateway_view(http, GW).await["readings_received"].as_u64()? >= from + more).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_shows_at_the_collector_while_the_gateway_keeps_storing_and_a_good_one_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let city = RunningCity::start(City { air: 0, traffic: 0, water: 1, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let c = collector(dir.path(), None, &sim::run::catalogue_toml(&city.sensors())).await;
    let http = c.http_addr;
    let modbus = sim::run::modbus_toml(&[city.device("wl-001").unwrap()], Duration::from_millis(200));
    let good = agent_toml(dir.path(), GW, &c.mqtt_url, &modbus, None);
    let agent = ReloadingAgent::start(dir.path(), &good);

    let first = config_when(http, "the agent's config in the API", |c| c["loaded_ms"].is_i64()).await;
    let loaded_ms = first["config"]["loaded_ms"].as_i64().unwrap();
    assert!(first["config"]["reload_refused"].is_null(), "{first}");

    // A broken file: refused with its reasons, the running config kept.
    agent.reload(&good.replacen("unit = 1", "unit = \"one\"", 1));
    let g = config_when(http, "the refused reload in the API", |c| c["reload_refused"].is_object()).await;
    let config = &g["config"];
    let refused = &config["reload_refused"];
    let reasons: Vec<&str> = refused["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("agent.toml:") && r.contains("modbus[0].unit")), "the file, line and key: {reasons:?}");
    assert!(reasons.len() <= 5 && reasons.iter().all(|r| r.chars().count() <= 300), "{reasons:?}");
    assert_eq!(config["loaded_ms"].as_i64(), Some(loaded_ms), "still the config loaded at start: {g}");
    let at = refused["at_ms"].as_i64().unwrap();
    assert!(at > loaded_ms, "{g}");
    // The gateway goes on: online, polling, its readings stored.
    assert_eq!(g["status"], "online", "{g}");
    storing(http, g["readings_received"].as_u64().unwrap(), 5).await;
    assert_eq!(gateway_view(http, GW).await["config"]["reload_refused"]["at_ms"].as_i64(), Some(at), "the refusal stays while nothing changes");

    // A file renaming the gateway: refused too, naming both ids; nothing arrives under the new one.
    agent.reload(&good.replace(&format!("gateway = \"{GW}\""), "gateway = \"gw-renamed\""));
    let g = config_when(http, "the refused rename in the API", |c| c["reload_refused"]["at_ms"].as_i64() > Some(at)).await;
    let reason = g["config"]["reload_refused"]["reasons"][0].as_str().unwrap();
    assert!(reason.contains(&format!("gateway: changed from `{GW}` to `gw-renamed`")), "{g}");
    assert_eq!(g["config"]["loaded_ms"].as_i64(), Some(loaded_ms), "{g}");
    storing(http, g["readings_received"].as_u64().unwrap(), 5).await;
    assert!(gateway_view(http, "gw-renamed").await.is_null(), "no gateway under the refused id");

    // The file put right: accepted, the refusal gone, a newer config running.
    agent.reload(&good);
    let g = config_when(http, "the refusal cleared by an accepted reload", |c| c["reload_refused"].is_null() && c["loaded_ms"].as_i64() > Some(loaded_ms)).await;
    storing(http, g["readings_received"].as_u64().unwrap(), 5).await;
    agent.stop();
    c.shutdown().await;
}
