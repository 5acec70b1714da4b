//! The SensorThings endpoint over raw HTTP, mirroring the OGC conformance
//! suite's (ets-sta10) Sensing Core and Filtering checks: every entity set
//! and relation, 404s, `$ref`, `$value`, each query option on each entity
//! type, nested `$expand` with options, paging by nextLink; values against
//! the series API; the open/closed policy; MQTT receiving updates.
//! Readings come from a gateway played by the test, so every expected value
//! is known.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use shared::{Quality, Reading, Seq};
use support::*;

const HOUR: i64 = 3_600_000;

const CATALOGUE: &str = r#"
[[sensor]]
id = "aq-001"
kind = "air_quality"
name = "Xihu station"
district = "Xihu"
owner = "Environment Bureau"
lat = 30.259
lon = 120.13
gateway = "gw-1"
installed = "2020-01-01"
units = { pm25 = "ug/m3", no2 = "ug/m3" }
open = true
licence = "CC-BY-4.0"

[[sensor]]
id = "wl-001"
kind = "water_level"
name = "Gongshu river gauge"
district = "Gongshu"
lat = 30.3
lon = 120.2
gateway = "gw-1"
units = { water_level_m = "m" }
open = true
licence = "CC0-1.0"

[[sensor]]
id = "tr-001"
kind = "traffic"
district = "Binjiang"
lat = 30.2
lon = 120.21
gateway = "gw-1"
units = { vehicle_count = "vehicles" }
"#;

/// pm25: 120 readings a minute apart from `base`, value i/2; wl: 60 two
/// minutes apart; tr (closed): 10.
fn readings(base: i64) -> Vec<Reading> {
    let r = |sensor: &str, metric: &str, ts_ms: i64, value: f64| Reading { seq: Seq(0), sensor: sensor.into(), metric: metric.into(), ts_ms, value, quality: Quality::Good };
    let mut out: Vec<Reading> = (0..120).map(|i| r("aq-001", "pm25", base + i * 60_000, i as f64 / 2.0)).collect();
    out.extend((0..60).map(|i| r("wl-001", "water_level_m", base + i * 120_000, 3.0 + i as f64 / 100.0)));
    out.extend((0..10).map(|i| r("tr-001", "vehicle_count", base + i * 60_000, i as f64)));
    out.push(Reading { quality: Quality::Uncertain, ..r("aq-001", "no2", base, 41.0) });
    out
}

struct City {
    collector: collector::Collector,
    gateway: FakeGateway,
    addr: SocketAddr,
    base: i64,
    _dir: tempfile::TempDir,
}

/// Enough requests per second for the tests that make hundreds.
const UNLIMITED: &str = "[sta]\nanonymous_rate = 100000\n";

/// A collector with the catalogue (and `extra` config), fed the readings.
async fn city(extra: &str) -> City {
    let dir = tempfile::tempdir().unwrap();
    let collector = collector(dir.path(), None, &format!("{CATALOGUE}\n{extra}")).await;
    // Two whole hours before the current one: rollups cover them.
    let base = (now_ms() / HOUR - 3) * HOUR;
    let mut gw = FakeGateway::connect(&collector.mqtt_url, "gw-1").await;
    let last = gw.send(readings(base)).await;
    gw.wait_acked(last, Duration::from_secs(20)).await;
    City { addr: collector.http_addr, collector, gateway: gw, base, _dir: dir }
}

/// A path with spaces and plus signs escaped for the request line.
fn enc(path: &str) -> String {
    path.replace(' ', "%20").replace('+', "%2B").replace('#', "%23")
}

async fn sta_as(addr: SocketAddr, token: &str, path: &str) -> (u16, String) {
    request_as(addr, token, "GET", &format!("/sta/v1.1/{}", enc(path)), "").await
}

async fn sta(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = sta_as(addr, "", path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The path of an absolute link to this collector, for the raw client.
fn local(link: &str) -> String {
    let at = link.find("/sta/v1.1/").unwrap_or_else(|| panic!("not a link into the service: {link}"));
    link[at + "/sta/v1.1/".len()..].to_string()
}

/// Every entity of a collection, following nextLinks.
async fn all(addr: SocketAddr, path: &str) -> Vec<Value> {
    let mut page = sta(addr, path).await;
    let mut out = Vec::new();
    loop {
        out.extend(page["value"].as_array().unwrap().iter().cloned());
        match page["@iot.nextLink"].as_str() {
            Some(next) => page = sta(addr, &local(next)).await,
            None => return out,
        }
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["value"].as_array().unwrap().iter().map(|e| e["@iot.id"].as_str().unwrap().to_string()).collect()
}

async fn status(addr: SocketAddr, path: &str) -> (u16, String) {
    sta_as(addr, "", path).await
}

const SETS: [&str; 8] = ["Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties", "Observations", "FeaturesOfInterest"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensing_core_every_set_relation_ref_value_and_404() {
    let c = city(UNLIMITED).await;
    let addr = c.addr;
    let root = sta(addr, "").await;
    let names: Vec<&str> = root["value"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, SETS);
    for s in root["value"].as_array().unwrap() {
        assert!(s["url"].as_str().unwrap().ends_with(&format!("/sta/v1.1/{}", s["name"].as_str().unwrap())));
    }
    let conformance: Vec<&str> = root["serverSettings"]["conformance"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(conformance.contains(&"http://www.opengis.net/spec/iot_sensing/1.1/req/request-data"), "{conformance:?}");
    assert!(!conformance.iter().any(|c| c.contains("create-update-delete")), "no writes are implemented");
    let mqtt_endpoints = &root["serverSettings"]["http://www.opengis.net/spec/iot_sensing/1.1/req/receive-updates-via-mqtt/receive-updates"]["endpoints"];
    assert_eq!(mqtt_endpoints[0], c.collector.mqtt_url.as_str());

    // Every entity of every set: its selfLink answers with it, every navigationLink answers.
    for set in SETS {
        let page = sta(addr, &format!("{set}?$top=3")).await;
        let entities = page["value"].as_array().unwrap();
        assert!(!entities.is_empty(), "{set} is empty");
        for e in entities {
            let this = sta(addr, &local(e["@iot.selfLink"].as_str().unwrap())).await;
            assert_eq!(&this, e, "{set}: the selfLink gives the same entity");
            let links: Vec<(&String, &Value)> = e.as_object().unwrap().iter().filter(|(k, _)| k.ends_with("@iot.navigationLink")).collect();
            assert!(!links.is_empty(), "{set} has navigation links");
            for (name, link) in links {
                let (st, body) = status(addr, &local(link.as_str().unwrap())).await;
                assert_eq!(st, 200, "{set} {name}: {body}");
            }
        }
    }
    // Only open sensors without a token.
    assert_eq!(ids(&sta(addr, "Things").await), ["aq-001", "wl-001"]);
    assert_eq!(ids(&sta(addr, "Datastreams").await), ["aq-001~no2", "aq-001~pm25", "wl-001~water_level_m"]);
    assert_eq!(ids(&sta(addr, "Sensors").await), ["air_quality", "water_level"]);
    assert_eq!(ids(&sta(addr, "ObservedProperties").await), ["no2", "pm25", "water_level_m"]);

    // The mapping, property by property.
    let thing = sta(addr, "Things('aq-001')").await;
    assert_eq!(thing["name"], "Xihu station");
    assert_eq!(thing["properties"]["owner"], "Environment Bureau");
    assert_eq!(thing["properties"]["district"], "Xihu");
    assert_eq!(thing["properties"]["gateway"], "gw-1");
    assert_eq!(thing["properties"]["licence"], "CC-BY-4.0");
    let loc = sta(addr, "Things('aq-001')/Locations('aq-001')").await;
    assert_eq!(loc["location"], serde_json::json!({"type": "Point", "coordinates": [120.13, 30.259]}));
    assert_eq!(loc["encodingType"], "application/geo+json");
    let ds = sta(addr, "Datastreams('aq-001~pm25')").await;
    assert_eq!(ds["unitOfMeasurement"]["symbol"], "ug/m3");
    assert_eq!(ds["observationType"], "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement");
    let t = |ms: i64| collector::sta::time::format(ms);
    assert_eq!(ds["phenomenonTime"], format!("{}/{}", t(c.base), t(c.base + 119 * 60_000)));
    let no2 = sta(addr, "Datastreams('aq-001~no2')/Observations").await;
    assert_eq!(no2["value"][0]["resultQuality"], "uncertain");
    assert_eq!(no2["value"][0]["result"], 41.0);
    assert_eq!(no2["value"][0]["phenomenonTime"], t(c.base));

    // Paths four and more levels deep, both directions of every relation.
    let deep = sta(addr, "Things('aq-001')/Datastreams('aq-001~pm25')/Observations?$top=2").await;
    assert_eq!(ids(&deep), [format!("aq-001~pm25~{}", c.base), format!("aq-001~pm25~{}", c.base + 60_000)]);
    let obs_id = format!("aq-001~pm25~{}", c.base + 60_000);
    assert_eq!(sta(addr, &format!("Observations('{obs_id}')/Datastream/Thing/Locations")).await["value"][0]["@iot.id"], "aq-001");
    assert_eq!(
        sta(addr, &format!("Observations('{obs_id}')/FeatureOfInterest/Observations?$top=1")).await["value"][0]["@iot.id"].as_str().unwrap(),
        format!("aq-001~no2~{}", c.base)
    );
    assert_eq!(sta(addr, "Locations('aq-001')/Things('aq-001')/Datastreams('aq-001~pm25')/Sensor").await["@iot.id"], "air_quality");
    assert_eq!(sta(addr, "HistoricalLocations('aq-001')/Thing/HistoricalLocations").await["value"][0]["time"], "2020-01-01T00:00:00.000Z");
    assert_eq!(ids(&sta(addr, "Sensors('water_level')/Datastreams").await), ["wl-001~water_level_m"]);
    assert_eq!(ids(&sta(addr, "ObservedProperties('pm25')/Datastreams('aq-001~pm25')/Thing/Datastreams").await), ["aq-001~no2", "aq-001~pm25"]);
    assert_eq!(ids(&sta(addr, "Locations('wl-001')/HistoricalLocations('wl-001')/Locations").await), ["wl-001"]);

    // $ref, property, property/$value.
    let refs = sta(addr, "Things('aq-001')/Datastreams/$ref").await;
    assert_eq!(refs["value"].as_array().unwrap().len(), 2);
    assert_eq!(refs["value"][0].as_object().unwrap().keys().collect::<Vec<_>>(), ["@iot.selfLink"]);
    assert!(sta(addr, "Datastreams('aq-001~pm25')/Thing/$ref").await["@iot.selfLink"].as_str().unwrap().ends_with("/sta/v1.1/Things('aq-001')"));
    assert_eq!(sta(addr, "Things('aq-001')/name").await, serde_json::json!({"name": "Xihu station"}));
    assert_eq!(status(addr, "Things('aq-001')/name/$value").await, (200, "Xihu station".to_string()));
    assert_eq!(status(addr, &format!("Observations('{obs_id}')/result/$value")).await, (200, "0.5".to_string()));

    // 404 for what does not exist (or is not open); 400 naming what is wrong.
    for missing in [
        "Things('nope')",
        "Things('tr-001')",
        "Datastreams('tr-001~vehicle_count')",
        "Datastreams('aq-001~nope')",
        "Observations('aq-001~pm25~1')",
        "Frobs",
        "Things('aq-001')/Frobs",
        "Things('aq-001')/Datastreams('wl-001~water_level_m')",
        "Sensors('traffic')",
    ] {
        let (st, body) = status(addr, missing).await;
        assert_eq!(st, 404, "{missing}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    for (bad, words) in [
        ("Things?$filter=name eq", "$filter: at character 7"),
        ("Things?$top=x", "$top: `x` is not a non-negative integer"),
        ("Things?$select=nope", "$select: Things has no property or relation `nope`"),
        ("Things?$expand=Nope", "$expand: Things has no relation `Nope`"),
        ("Things?$filter=nosuch eq 1", "unknown property `nosuch` of Things"),
        ("Observations?$filter=year(result) eq 1", "year() takes a date-time"),
        ("Things?$orderby=name sideways", "$orderby"),
        ("Things/name", "follows the collection Things without an id"),
        ("Things('aq-001')/name/$ref", "$ref follows an entity or a collection"),
        ("Things('aq-001')/$value", "$value follows a property"),
        ("Things('aq-001')/Datastreams/$ref?$expand=Thing", "$expand: does not apply to $ref"),
        ("Things?foo=1", "foo: not a query option"),
    ] {
        let (st, body) = status(addr, bad).await;
        assert_eq!(st, 400, "{bad}: {body}");
        assert!(body.contains(words), "{bad}: {body}");
    }
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_option_on_every_set_and_values_match_the_series_api() {
    let c = city(UNLIMITED).await;
    let (addr, base) = (c.addr, c.base);
    let t = |ms: i64| collector::sta::time::format(ms);

    // Each option on each entity set: $top, $skip, $count, $select, $orderby, $filter on id.
    for set in SETS {
        let everything = all(addr, &format!("{set}?$top=50")).await;
        let total = everything.len();
        assert!(total > 0, "{set}");
        let counted = sta(addr, &format!("{set}?$count=true&$top=1")).await;
        assert_eq!(counted["@iot.count"], total as u64, "{set} $count");
        assert_eq!(counted["value"].as_array().unwrap().len(), 1, "{set} $top=1");
        assert_eq!(counted["@iot.nextLink"].is_string(), total > 1, "{set} nextLink");
        let skipped = sta(addr, &format!("{set}?$skip=1&$top=1")).await;
        if total > 1 {
            assert_eq!(skipped["value"][0], everything[1], "{set} $skip");
        }
        let selected = sta(addr, &format!("{set}?$select=id&$top=2")).await;
        for e in selected["value"].as_array().unwrap() {
            let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["@iot.id", "@iot.selfLink"], "{set} $select=id");
        }
        let first = everything[0]["@iot.id"].as_str().unwrap();
        let one = sta(addr, &format!("{set}?$filter=id eq '{first}'")).await;
        assert_eq!(ids(&one), [first], "{set} $filter on id");
        let desc = sta(addr, &format!("{set}?$orderby=id desc&$top=1")).await;
        let last_id = everything.iter().map(|e| e["@iot.id"].as_str().unwrap().to_string()).max().unwrap();
        assert_eq!(ids(&desc), [last_id], "{set} $orderby id desc");
    }

    // Paging by nextLink over a Datastream's 120 Observations: all, in time order, once each.
    let paged = all(addr, "Datastreams('aq-001~pm25')/Observations?$top=7").await;
    let times: Vec<String> = paged.iter().map(|o| o["phenomenonTime"].as_str().unwrap().to_string()).collect();
    assert_eq!(times, (0..120).map(|i| t(base + i * 60_000)).collect::<Vec<_>>());
    let results: Vec<f64> = paged.iter().map(|o| o["result"].as_f64().unwrap()).collect();
    assert_eq!(results, series_values(addr, "aq-001", "pm25").await, "the series API has the same values");

    // Time filters go to the store; $count of an exact time range comes from rollups.
    let hour = format!("Datastreams('aq-001~pm25')/Observations?$filter=phenomenonTime ge {} and phenomenonTime lt {}&$count=true&$top=100", t(base + HOUR), t(base + 2 * HOUR));
    let h = sta(addr, &hour).await;
    assert_eq!(h["@iot.count"], 60);
    assert_eq!(h["value"][0]["phenomenonTime"], t(base + HOUR));
    let partial = format!("Observations?$filter=phenomenonTime gt {} and resultTime le {}&$count=true", t(base + 30 * 60_000), t(base + 90 * 60_000));
    // pm25: minutes 31..=90 (60); water: even minutes 32..=90 (30); no2 only at base.
    assert_eq!(sta(addr, &partial).await["@iot.count"], 90);
    assert_eq!(sta(addr, "Observations?$count=true&$top=1").await["@iot.count"], 120 + 60 + 1, "open sensors only");

    // Comparison, logical, arithmetic operators on result.
    let f = |q: &str| format!("Datastreams('aq-001~pm25')/Observations?$count=true&$top=0&$filter={q}");
    for (q, n) in [
        ("result gt 50", 19),
        ("result ge 50 and result le 52", 5),
        ("result lt 1 or result eq 59.5", 3),
        ("not (result lt 59)", 2),
        ("result ne 0 and result mul 2 mod 10 eq 0", 11),
        ("result add 1 sub 1 div 1 eq 10", 1),
        ("round(result) eq 2", 2),
        ("floor(result) eq 2 and ceiling(result) eq 3", 1),
        ("Datastream/Thing/properties/district eq 'Xihu' and result lt 1", 2),
        ("Datastream/id eq 'wl-001~water_level_m'", 0),
    ] {
        assert_eq!(sta(addr, &f(q)).await["@iot.count"], n, "{q}");
    }
    // Date and time functions on phenomenonTime.
    let c0 = collector::sta::time::civil(base + 61 * 60_000);
    let q = format!(
        "year(phenomenonTime) eq {} and month(phenomenonTime) eq {} and day(phenomenonTime) eq {} and hour(phenomenonTime) eq {} and minute(phenomenonTime) eq 1",
        c0.year, c0.month, c0.day, c0.hour
    );
    assert_eq!(ids(&sta(addr, &format!("Datastreams('aq-001~pm25')/Observations?$filter={q}")).await), [format!("aq-001~pm25~{}", base + 61 * 60_000)]);
    assert_eq!(sta(addr, &f("phenomenonTime gt now() sub duration'PT1H'")).await["@iot.count"], 0, "all readings are over an hour old");
    assert_eq!(sta(addr, &f(&format!("date(phenomenonTime) ge {}", &t(base)[..10]))).await["@iot.count"], 120);

    // String functions and geometry on Things and Locations.
    for (q, want) in [
        ("Things?$filter=startswith(name, 'Xihu') and endswith(name, 'station') and contains(name, 'u s')", vec!["aq-001"]),
        ("Things?$filter=substringof('river', name) or tolower(properties/district) eq 'xihu'", vec!["aq-001", "wl-001"]),
        (
            "Things?$filter=length(name) eq 12 and indexof(name, 'station') eq 5 and substring(name, 0, 4) eq 'Xihu' and toupper(trim(name)) eq 'XIHU STATION' and concat(name, '!') eq 'Xihu station!'",
            vec!["aq-001"],
        ),
        ("Things?$filter=properties/licence eq 'CC0-1.0'", vec!["wl-001"]),
        ("Locations?$filter=geo.distance(location, geography'POINT(120.2 30.3)') lt 0.01", vec!["wl-001"]),
        ("Locations?$filter=st_within(location, geography'POLYGON((120 30.2, 120.15 30.2, 120.15 30.28, 120 30.28, 120 30.2))')", vec!["aq-001"]),
        ("FeaturesOfInterest?$filter=geo.intersects(feature, geography'POLYGON((120 30, 121 30, 121 31, 120 31, 120 30))')", vec!["aq-001", "wl-001"]),
        ("Things?$filter=Datastreams/ObservedProperty/id eq 'water_level_m'", vec!["wl-001"]),
        ("Datastreams?$filter=unitOfMeasurement/symbol eq 'm'", vec!["wl-001~water_level_m"]),
        ("Datastreams?$filter=phenomenonTime gt 2000-01-01T00:00:00Z and Thing/name eq 'Xihu station'", vec!["aq-001~no2", "aq-001~pm25"]),
    ] {
        assert_eq!(ids(&sta(addr, q).await), want, "{q}");
    }

    // $orderby with several keys, asc and desc; by time across Datastreams.
    let by_result = sta(addr, "Datastreams('aq-001~pm25')/Observations?$orderby=result desc&$top=3").await;
    assert_eq!(by_result["value"].as_array().unwrap().iter().map(|o| o["result"].as_f64().unwrap()).collect::<Vec<_>>(), [59.5, 59.0, 58.5]);
    let things = sta(addr, "Datastreams?$orderby=Thing/name desc, id asc").await;
    assert_eq!(ids(&things), ["aq-001~no2", "aq-001~pm25", "wl-001~water_level_m"]);
    let newest = sta(addr, "Observations?$orderby=phenomenonTime desc&$top=3").await;
    // Ties at one instant go by Datastream id.
    assert_eq!(
        ids(&newest),
        [format!("aq-001~pm25~{}", base + 119 * 60_000), format!("aq-001~pm25~{}", base + 118 * 60_000), format!("wl-001~water_level_m~{}", base + 118 * 60_000)]
    );
    let oldest = sta(addr, "Observations?$orderby=phenomenonTime asc&$top=4&$skip=1").await;
    assert_eq!(
        ids(&oldest),
        [format!("aq-001~pm25~{base}"), format!("wl-001~water_level_m~{base}"), format!("aq-001~pm25~{}", base + 60_000), format!("aq-001~pm25~{}", base + 120_000)]
    );
    let paged_desc = all(addr, "Datastreams('wl-001~water_level_m')/Observations?$orderby=phenomenonTime desc&$top=25").await;
    assert_eq!(paged_desc.len(), 60);
    assert_eq!(paged_desc[59]["phenomenonTime"], t(base));

    // The latest observation of every Datastream, as the live view has it.
    let latest = sta(addr, "Datastreams?$expand=Observations($top=1;$orderby=phenomenonTime desc)").await;
    let newest: Vec<f64> = latest["value"].as_array().unwrap().iter().map(|d| d["Observations"][0]["result"].as_f64().unwrap()).collect();
    assert_eq!(newest, [41.0, 59.5, 3.59]);
    assert_eq!(latest["value"][1]["Observations"][0]["phenomenonTime"], t(base + 119 * 60_000));

    // Nested $expand with options inside, $select at each level.
    let nested = sta(addr, "Things?$filter=id eq 'aq-001'&$select=name,Datastreams&$expand=Datastreams($select=name;$filter=ObservedProperty/id eq 'pm25';$expand=Observations($top=2;$skip=1;$select=result;$count=true),ObservedProperty($select=name)),Locations").await;
    let thing = &nested["value"][0];
    assert_eq!(thing["name"], "Xihu station");
    assert!(thing.get("@iot.id").is_none() && thing.get("description").is_none(), "{thing}");
    assert!(thing["Datastreams@iot.navigationLink"].is_string());
    assert_eq!(thing["Locations"][0]["@iot.id"], "aq-001");
    let ds = thing["Datastreams"].as_array().unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0]["name"], "Xihu station pm25");
    assert_eq!(ds[0]["ObservedProperty"], serde_json::json!({"name": "pm25"}));
    assert_eq!(ds[0]["Observations@iot.count"], 120);
    assert_eq!(ds[0]["Observations"], serde_json::json!([{"result": 0.5}, {"result": 1.0}]));
    let inner_next = ds[0]["Observations@iot.nextLink"].as_str().unwrap();
    let next = sta(addr, &local(inner_next)).await;
    assert_eq!(next["value"].as_array().unwrap().iter().map(|o| o["result"].as_f64().unwrap()).collect::<Vec<_>>(), [1.5, 2.0]);
    let path_form = sta(addr, "Observations?$top=1&$expand=Datastream/Thing($select=id)").await;
    assert_eq!(path_form["value"][0]["Datastream"]["Thing"].as_object().unwrap().len(), 2);
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sensor_is_absent_without_a_token_and_present_with_one() {
    let token = "viewer-secret-for-sta";
    let extra = format!("[[auth.token]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"{}\"\n", shared::auth::sha256_hex(token));
    let c = city(&extra).await;
    let addr = c.addr;
    let anon = serde_json::from_str::<Value>(&sta_as(addr, "", "Things").await.1).unwrap();
    assert_eq!(ids(&anon), ["aq-001", "wl-001"]);
    assert_eq!(sta_as(addr, "", "Things('tr-001')").await.0, 404);
    assert_eq!(sta_as(addr, "", "Datastreams('tr-001~vehicle_count')/Observations").await.0, 404);
    let (st, body) = sta_as(addr, token, "Things").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(ids(&serde_json::from_str(&body).unwrap()), ["aq-001", "tr-001", "wl-001"]);
    let (st, body) = sta_as(addr, token, "Datastreams('tr-001~vehicle_count')/Observations?$count=true&$top=0").await;
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["@iot.count"].as_u64()), (200, Some(10)));
    let (st, body) = sta_as(addr, "", "Observations?$count=true&$top=0&$filter=Datastream/Thing/id eq 'tr-001'").await;
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["@iot.count"].as_u64()), (200, Some(0)), "{body}");
    let (st, body) = sta_as(addr, "wrong-token", "Things").await;
    assert_eq!(st, 401, "{body}");
    // Nothing in the model carries a credential or an internal topic.
    let (_, everything) = sta_as(addr, token, "Things?$expand=Datastreams($expand=Observations($top=1),Sensor,ObservedProperty),Locations,HistoricalLocations").await;
    for secret in ["citysense/v1", "password", "sha256", "batch_key", token] {
        assert!(!everything.contains(secret), "{secret} in {everything}");
    }
    // The rest of the API still wants the token.
    assert_eq!(request_as(addr, "", "GET", "/api/v1/sensors", "").await.0, 401);
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_share_a_rate_limit_and_token_holders_are_not_limited() {
    let token = "viewer-secret-for-sta";
    let extra = format!("[sta]\nanonymous_rate = 1\n[[auth.token]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"{}\"\n", shared::auth::sha256_hex(token));
    let c = city(&extra).await;
    // Two seconds' worth in the bucket: six requests within three seconds cannot all pass.
    let mut anonymous = Vec::new();
    for _ in 0..6 {
        anonymous.push(status(c.addr, "Things").await);
    }
    let refused: Vec<&(u16, String)> = anonymous.iter().filter(|(st, _)| *st == 429).collect();
    assert!(!refused.is_empty(), "{anonymous:?}");
    assert!(refused[0].1.contains("sta.anonymous_rate"), "{}", refused[0].1);
    for _ in 0..6 {
        assert_eq!(sta_as(c.addr, token, "Things").await.0, 200);
    }
    c.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_subscribers_receive_each_new_observation_as_its_json() {
    use rumqttc::{Event, MqttOptions, Packet, QoS};
    let mut c = city("").await;
    let broker = shared::url::BrokerUrl::parse(&c.collector.mqtt_url).unwrap();
    let mut opts = MqttOptions::new("sta-subscriber-1", broker.host.clone(), broker.port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 100);
    let topic = "v1.1/Datastreams('aq-001~pm25')/Observations";
    client.subscribe(topic, QoS::AtMostOnce).await.unwrap();
    client.subscribe("v1.1/Observations", QoS::AtMostOnce).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => tx.send(("suback".to_string(), Vec::new())).unwrap(),
                Ok(Event::Incoming(Packet::Publish(p))) => tx.send((p.topic.clone(), p.payload.to_vec())).unwrap(),
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });
    // The city's seeded readings may already be flowing out to `v1.1/`
    // before the second SUBACK: wait for both grants, passing over those.
    let mut granted = 0;
    while granted < 2 {
        if tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a SUBACK within 10 s").unwrap().0 == "suback" {
            granted += 1;
        }
    }
    let ts = c.base + 2 * HOUR + 30_000;
    let reading = |sensor: &str, metric: &str, value: f64| Reading { seq: Seq(0), sensor: sensor.into(), metric: metric.into(), ts_ms: ts, value, quality: Quality::Good };
    c.gateway.send(vec![reading("aq-001", "pm25", 77.5), reading("wl-001", "water_level_m", 4.2)]).await;
    // Only this batch's observations count.
    let mut got: Vec<(String, Value)> = Vec::new();
    while got.len() < 3 {
        let (t, payload) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an update within 10 s").unwrap();
        let obs: Value = serde_json::from_slice(&payload).unwrap();
        if obs["@iot.id"].as_str().is_some_and(|id| id.ends_with(&format!("~{ts}"))) {
            got.push((t, obs));
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1["@iot.id"].as_str().cmp(&b.1["@iot.id"].as_str())));
    assert_eq!(got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), [topic, "v1.1/Observations", "v1.1/Observations"]);
    let obs = &got[0].1;
    assert_eq!(obs["@iot.id"].as_str().unwrap(), format!("aq-001~pm25~{ts}"));
    assert_eq!(obs["result"], 77.5);
    // The same JSON the HTTP API serves for it.
    assert_eq!(obs, &sta(c.addr, &local(obs["@iot.selfLink"].as_str().unwrap())).await);
    assert_eq!(got[2].1["result"], 4.2);
    c.collector.shutdown().await;
}

/// `$skip` inside one Datastream passes over whole hours by their rollup
/// counts: every skip, before, at and after an hour's edge and with a
/// filter starting mid-hour, lands on the observation the series API has
/// there, and a nextLink walk gives each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_inside_a_datastream_lands_where_the_series_api_says_across_hours() {
    let c = city(UNLIMITED).await;
    let series = series_values(c.addr, "aq-001", "pm25").await;
    assert_eq!(series.len(), 120);
    let result = |v: &Value| v["value"].as_array().unwrap().iter().map(|o| o["result"].as_f64().unwrap()).collect::<Vec<f64>>();
    // 25 minutes into the first hour: 35 observations there, 60 in the next.
    let since = collector::sta::time::format(c.base + 25 * 60_000);
    for skip in [0, 1, 34, 35, 36, 94, 95, 200] {
        let page = sta(c.addr, &format!("Datastreams('aq-001~pm25')/Observations?$filter=phenomenonTime ge {since}&$skip={skip}&$top=3")).await;
        let want: Vec<f64> = series.iter().skip(25 + skip).take(3).copied().collect();
        assert_eq!(result(&page), want, "filtered, $skip={skip}");
    }
    for skip in [59, 60, 61, 119, 120] {
        let page = sta(c.addr, &format!("Datastreams('aq-001~pm25')/Observations?$skip={skip}&$top=2")).await;
        assert_eq!(result(&page), series.iter().skip(skip).take(2).copied().collect::<Vec<_>>(), "$skip={skip}");
    }
    let walked: Vec<f64> =
        all(c.addr, &format!("Datastreams('aq-001~pm25')/Observations?$filter=phenomenonTime ge {since}&$top=7")).await.iter().map(|o| o["result"].as_f64().unwrap()).collect();
    assert_eq!(walked, series[25..], "a nextLink walk of pages of 7");
    c.collector.shutdown().await;
}

/// FROST-Server's own Python client (PyPI `frost-sta-client`, installed by
/// tests/run) reads the endpoint: whole sets page by page, links, a filter
/// on phenomenonTime and result, and the values the series API returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_sta_client_reads_what_the_series_api_holds() {
    let c = city(UNLIMITED).await;
    let since = collector::sta::time::format(c.base + HOUR);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sta/frost_client.py");
    let url = format!("http://{}/sta/v1.1/", c.addr);
    let out = tokio::process::Command::new("python3").arg(&script).args([url.as_str(), "aq-001~pm25", since.as_str()]).output().await.expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "frost_client.py failed (pip install frost-sta-client; tests/run does):\n{stderr}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(got["things"], serde_json::json!(["aq-001", "wl-001"]));
    assert_eq!(got["datastreams"], serde_json::json!(["aq-001~no2", "aq-001~pm25", "wl-001~water_level_m"]));
    assert_eq!(got["thing_name"], "Xihu station");
    assert_eq!(got["thing_datastreams"], serde_json::json!(["aq-001~no2", "aq-001~pm25"]));
    assert_eq!(got["datastream_unit"], "ug/m3");
    let series = series_values(c.addr, "aq-001", "pm25").await;
    let values: Vec<f64> = got["observations"].as_array().unwrap().iter().map(|o| o[1].as_f64().unwrap()).collect();
    assert_eq!(values, series, "all 120 through nextLinks of 25, as the series API has them");
    let times: Vec<i64> = got["observations"].as_array().unwrap().iter().map(|o| collector::sta::time::parse(o[0].as_str().unwrap()).unwrap().0).collect();
    assert_eq!(times, (0..120).map(|i| c.base + i * 60_000).collect::<Vec<_>>());
    // From an hour in, above 30: minutes 61..=119 (30.5 .. 59.5).
    let filtered: Vec<f64> = got["filtered"].as_array().unwrap().iter().map(|o| o[1].as_f64().unwrap()).collect();
    assert_eq!(filtered, series[61..].to_vec());
    assert_eq!(got["count"], 120);
    c.collector.shutdown().await;
}

/// The model is built once and kept until what it is made of changes: a
/// metric heard for the first time is a Datastream in the very next request
/// (for the public and for a token holder, each with a model of their own),
/// and a newer reading of a known Datastream is its latest observation at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_heard_for_the_first_time_is_in_the_next_request_and_latest_values_are_live() {
    let token = "viewer-secret-for-sta";
    let extra = format!("{UNLIMITED}[[auth.token]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"{}\"\n", shared::auth::sha256_hex(token));
    let mut c = city(&extra).await;
    let addr = c.addr;
    let latest_q = "Datastreams?$expand=Observations($top=1;$orderby=phenomenonTime desc)";
    let viewer = |path: &'static str| async move {
        let (st, body) = sta_as(addr, token, path).await;
        assert_eq!(st, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    // Both models built and in use.
    assert_eq!(ids(&sta(addr, latest_q).await), ["aq-001~no2", "aq-001~pm25", "wl-001~water_level_m"]);
    assert_eq!(ids(&viewer("Datastreams").await), ["aq-001~no2", "aq-001~pm25", "tr-001~vehicle_count", "wl-001~water_level_m"]);

    let ts = c.base + 2 * HOUR + 30_000;
    let reading = |sensor: &str, metric: &str, value: f64| Reading { seq: Seq(0), sensor: sensor.into(), metric: metric.into(), ts_ms: ts, value, quality: Quality::Good };
    let last = c.gateway.send(vec![reading("aq-001", "o3", 12.0), reading("aq-001", "pm25", 99.0), reading("tr-001", "speed_kmh", 40.0)]).await;
    c.gateway.wait_acked(last, Duration::from_secs(20)).await;

    let after = sta(addr, latest_q).await;
    assert_eq!(ids(&after), ["aq-001~no2", "aq-001~o3", "aq-001~pm25", "wl-001~water_level_m"], "a new series of an open sensor");
    let latest = |id: &str| after["value"].as_array().unwrap().iter().find(|d| d["@iot.id"] == id).unwrap()["Observations"][0].clone();
    assert_eq!((latest("aq-001~pm25")["result"].as_f64(), latest("aq-001~o3")["result"].as_f64()), (Some(99.0), Some(12.0)));
    assert_eq!(latest("aq-001~pm25")["phenomenonTime"], collector::sta::time::format(ts));
    assert_eq!(ids(&sta(addr, "Things('aq-001')/Datastreams").await), ["aq-001~no2", "aq-001~o3", "aq-001~pm25"]);
    assert!(ids(&sta(addr, "ObservedProperties").await).contains(&"o3".to_string()));
    assert_eq!(ids(&sta(addr, "Datastreams('aq-001~o3')/Observations").await), [format!("aq-001~o3~{ts}")]);
    assert_eq!(
        ids(&viewer("Datastreams").await),
        ["aq-001~no2", "aq-001~o3", "aq-001~pm25", "tr-001~speed_kmh", "tr-001~vehicle_count", "wl-001~water_level_m"],
        "a new series of a closed sensor, for a token holder"
    );
    // Still not for the public.
    assert_eq!(status(addr, "Datastreams('tr-001~speed_kmh')").await.0, 404);
    c.collector.shutdown().await;
}

/// A Datastream's `phenomenonTime` starts at its oldest observation kept, and
/// `$count` and `$skip` count from there: a late reading older than all
/// others moves it back at once, and raw retention deleting the oldest moves
/// it forward again (the store keeps that time in memory: an update it missed
/// would show here as a stale start and a count of deleted observations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phenomenon_time_count_and_skip_follow_a_late_older_reading_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    // `collector()` puts this after [store]: the first two lines land in it.
    let cfg = format!("expire_every = \"1s\"\n[store.keep]\nraw = \"1d\"\nminute = \"30d\"\nhour = \"forever\"\n{UNLIMITED}{CATALOGUE}");
    let c = collector(dir.path(), None, &cfg).await;
    let addr = c.http_addr;
    let mut gw = FakeGateway::connect(&c.mqtt_url, "gw-1").await;
    let base = (now_ms() / HOUR - 3) * HOUR;
    let last = gw.send(readings(base)).await;
    gw.wait_acked(last, Duration::from_secs(20)).await;
    let t = collector::sta::time::format;
    let newest = base + 119 * 60_000;
    let check = |first: i64, count: u64, second: i64, why: &'static str| async move {
        let ds = sta(addr, "Datastreams('aq-001~pm25')").await;
        assert_eq!(ds["phenomenonTime"], format!("{}/{}", t(first), t(newest)), "{why}");
        let all = sta(addr, "Datastreams('aq-001~pm25')/Observations?$count=true&$top=1").await;
        assert_eq!((all["@iot.count"].as_u64(), all["value"][0]["phenomenonTime"].as_str()), (Some(count), Some(t(first).as_str())), "{why}");
        let skipped = sta(addr, "Datastreams('aq-001~pm25')/Observations?$skip=1&$top=1").await;
        assert_eq!(skipped["value"][0]["phenomenonTime"], t(second), "{why}");
        // pm25, no2 and the water level: the open Datastreams.
        assert_eq!(sta(addr, "Observations?$count=true&$top=1").await["@iot.count"], count + 61, "{why}");
    };
    check(base, 120, base + 60_000, "as written").await;

    let reading = |ts_ms: i64| Reading { seq: Seq(0), sensor: "aq-001".into(), metric: "pm25".into(), ts_ms, value: 7.0, quality: Quality::Good };
    // Late, older than every other, inside an hour.
    let late = base - 90 * 60_000 + 500;
    let last = gw.send(vec![reading(late)]).await;
    gw.wait_acked(last, Duration::from_secs(20)).await;
    check(late, 121, base, "after a late older reading").await;

    // Older than raw retention keeps, at an hour's start (its hour rollup outlives them).
    let old = (now_ms() - 3 * 24 * HOUR) / HOUR * HOUR;
    let last = gw.send((0..5).map(|i| reading(old + i * 1_000)).collect()).await;
    gw.wait_acked(last, Duration::from_secs(20)).await;
    wait_for("raw samples past retention deleted", Duration::from_secs(20), || async { (metric(addr, "citysense_store_expired_samples_total").await >= 5.0).then_some(()) }).await;
    check(late, 121, base, "after retention deleted the oldest").await;
    c.shutdown().await;
}
