//! The catalogue as served, uncatalogued sensors listed for an operator, and
//! the export of a time range as CSV and line protocol.

use std::time::Duration;

use shared::{Quality, Reading};
use support::*;

const CATALOGUE: &str = r#"
[[sensor]]
id = "aq-001"
kind = "air_quality"
name = "Culture Square"
district = "West, Lake"
owner = "Environment Bureau"
lat = 30.259
lon = 120.13
installed = "2026-03-15"
units = { pm25 = "ug/m3" }
"#;

fn reading(sensor: &str, metric: &str, ts_ms: i64, value: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: sensor.into(), metric: metric.into(), ts_ms, value, quality: Quality::Good }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_lists_uncatalogued_senders_and_exports_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), None, CATALOGUE).await;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-e").await;
    let t0 = 1_700_000_000_000;
    let last = gw
        .send(vec![
            reading("aq-001", "pm25", t0, 12.5),
            reading("zz-9", "noise_laeq", t0 + 500, 60.0),
            reading("aq-001", "pm25", t0 + 1000, 13.0),
            reading("aq-001", "pm25", t0 + 9000, 99.0),
        ])
        .await;
    gw.wait_acked(last, Duration::from_secs(20)).await;

    let all = get_json(c.http_addr, "/api/v1/sensors").await;
    let aq = all.as_array().unwrap().iter().find(|s| s["id"] == "aq-001").unwrap();
    assert_eq!(
        (aq["kind"].as_str(), aq["owner"].as_str(), aq["installed"].as_str(), aq["catalogued"].as_bool()),
        (Some("air_quality"), Some("Environment Bureau"), Some("2026-03-15"), Some(true))
    );
    assert_eq!(aq["metrics"][0]["unit"], "ug/m3");
    let new = get_json(c.http_addr, "/api/v1/sensors?catalogued=false").await;
    let ids: Vec<&str> = new.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["zz-9"], "only the uncatalogued sender");
    assert_eq!(new[0]["gateway"], "gw-e");
    assert_eq!(get(c.http_addr, "/api/v1/sensors?catalogued=maybe").await.0, 400);

    // 2023 readings, before aq-001's install date and older than raw retention,
    // from a gateway whose clock is right: kept at their time, as `uncertain`.
    let (status, csv) = get(c.http_addr, &format!("/api/v1/export?from={t0}&to={}", t0 + 5000)).await;
    assert_eq!(status, 200, "{csv}");
    assert_eq!(
        csv,
        "sensor,kind,district,owner,metric,unit,time,ts_ms,value,quality\n\
         aq-001,air_quality,\"West, Lake\",Environment Bureau,pm25,ug/m3,2023-11-14T22:13:20.000Z,1700000000000,12.5,uncertain\n\
         aq-001,air_quality,\"West, Lake\",Environment Bureau,pm25,ug/m3,2023-11-14T22:13:21.000Z,1700000001000,13.0,uncertain\n\
         zz-9,,,,noise_laeq,dB(A),2023-11-14T22:13:20.500Z,1700000000500,60.0,uncertain\n"
    );
    let (status, lp) = get(c.http_addr, &format!("/api/v1/export?from={t0}&to={}&format=line&sensor=aq-001", t0 + 5000)).await;
    assert_eq!(status, 200);
    assert_eq!(
        lp,
        "pm25,district=West\\,\\ Lake,gateway=gw-e,kind=air_quality,owner=Environment\\ Bureau,sensor=aq-001 value=12.5,quality=1i 1700000000000\n\
         pm25,district=West\\,\\ Lake,gateway=gw-e,kind=air_quality,owner=Environment\\ Bureau,sensor=aq-001 value=13.0,quality=1i 1700000001000\n"
    );
    let (status, err) = get(c.http_addr, "/api/v1/export?from=-1h&format=xml").await;
    assert_eq!(status, 400);
    assert!(err.contains("format `xml`"), "{err}");
    let (status, err) = get(c.http_addr, "/api/v1/export").await;
    assert_eq!(status, 400);
    assert!(err.contains("`from` is required"), "{err}");
}
