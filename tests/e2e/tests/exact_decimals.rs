//! Values keep the precision they were read at, end to end: a register read
//! at 0.1 resolution (876 × 0.1) and f32 registers (35.7f32, 37.3f32) leave
//! a real agent as 87.6, 35.7 and 37.3 and come out of the collector so,
//! bit for bit and digit for digit, in the series and sensors API, the SSE
//! stream, the MQTT live feed, the CSV and line-protocol exports, and the
//! line protocol the InfluxDB sink puts on the wire. Without the agent's
//! rounding they would read 87.60000000000001, 35.70000076293945 and
//! 37.29999923706055 everywhere.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rumqttc::{Event, Packet, QoS};
use serde_json::Value;
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(30);

/// (metric, value forced at the simulator, its register form, how it must be written).
const CASES: [(&str, f64, &str, &str); 4] =
    [("pm25", 35.7, "f32 ABCD", "35.7"), ("pm10", 37.3, "f32 CDAB", "37.3"), ("temperature_c", -5.3, "i16 x 0.1", "-5.3"), ("humidity_pct", 87.6, "u16 x 0.1", "87.6")];

/// An InfluxDB v2 write endpoint that keeps every line it is sent, as sent.
async fn recording_influx() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let keep = lines.clone();
    let app = axum::Router::new().route(
        "/api/v2/write",
        axum::routing::post(move |body: String| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().extend(body.lines().map(str::to_string));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, lines)
}

/// Every `"value":…` number of a JSON text, as written.
fn json_values(text: &str) -> Vec<&str> {
    text.split("\"value\":").skip(1).map(|rest| rest.split([',', '}']).next().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_at_a_resolution_arrive_at_it_in_every_api_feed_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let (influx, written) = recording_influx().await;
    let plan = City { air: 1, traffic: 0, water: 0, noise: 0 };
    let sink = format!("[influxdb]\nurl = \"http://{influx}\"\norg = \"city\"\nbucket = \"sensors\"\nbatch_points = 100\n");
    let c = collector(dir.path(), None, &format!("{sink}{}", sim::run::catalogue_toml(&plan.sensors()))).await;
    let http = c.http_addr;
    let city = RunningCity::start(plan, None, Duration::from_millis(200)).await.unwrap();
    // Forced before the agent's first poll: every reading of these series is the forced value.
    for (metric, value, _, _) in CASES {
        city.control.force("aq-001", metric, value);
    }

    let mut sse = SseClient::connect(http, "/api/v1/stream?types=reading&sensor=aq-001").await;
    let broker = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let (live, mut live_events) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("exact-decimals-live", broker.host.clone(), broker.port), 64);
    live.subscribe("citysense/v1/live/aq-001/+", QoS::AtMostOnce).await.unwrap();
    // Subscribed before the agent starts, so no live value passes unseen.
    loop {
        let event = tokio::time::timeout(LIMIT, live_events.poll()).await.expect("the collector's broker answers").unwrap();
        if matches!(event, Event::Incoming(Packet::SubAck(_))) {
            break;
        }
    }

    let cfg = agent_config(dir.path(), "gw-exact", &c.mqtt_url, &sim::run::modbus_toml(&[&city.devices[0]], Duration::from_millis(200)), None);
    let agent = agent::Agent::start(cfg).await.unwrap();

    // The MQTT live feed: the payload as the collector wrote it.
    let mut heard = std::collections::BTreeMap::new();
    while heard.len() < CASES.len() {
        let event = tokio::time::timeout(LIMIT, live_events.poll()).await.expect("live values within 30 s").unwrap();
        if let Event::Incoming(Packet::Publish(p)) = event {
            let metric = p.topic.rsplit('/').next().unwrap().to_string();
            if let Some((_, _, _, text)) = CASES.iter().find(|c| c.0 == metric) {
                let payload = String::from_utf8_lossy(&p.payload).to_string();
                assert_eq!(json_values(&payload), [*text], "live/aq-001/{metric}: {payload}");
                heard.insert(metric, payload);
            }
        }
    }

    for (metric, value, form, text) in CASES {
        // SSE: the reading event, re-serialized as it was parsed.
        let event = sse.next_where("reading", LIMIT, |v| v["metric"] == metric).await;
        assert_eq!(event["value"].as_f64().unwrap().to_bits(), value.to_bits(), "SSE {metric} ({form}): {event}");
        assert_eq!(event["value"].to_string(), text, "SSE {metric} ({form})");

        // Series API, raw points: at least a few, every one written as the device meant it.
        let path = format!("/api/v1/series?sensor=aq-001&metric={metric}&from=0");
        let body = wait_for(&format!("3 points of {metric}"), LIMIT, || async {
            let (status, body) = get(http, &path).await;
            (status == 200 && json_values(&body).len() >= 3).then_some(body)
        })
        .await;
        assert!(json_values(&body).iter().all(|v| v == &text), "series {metric} ({form}): {body}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert!(parsed["points"].as_array().unwrap().iter().all(|p| p["value"].as_f64().unwrap().to_bits() == value.to_bits()), "{body}");

        assert_eq!(latest(http, "aq-001", metric).await.map(f64::to_bits), Some(value.to_bits()), "sensors API latest {metric}");
    }

    // CSV export: the value column of every row of these metrics.
    let (status, csv) = get(http, "/api/v1/export?from=0&sensor=aq-001&format=csv").await;
    assert_eq!(status, 200, "{csv}");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let (m_col, v_col) = (header.iter().position(|h| *h == "metric").unwrap(), header.iter().position(|h| *h == "value").unwrap());
    for (metric, _, form, text) in CASES {
        // Rows split from the right: owner and district may hold commas in quotes.
        let values: Vec<String> = csv
            .lines()
            .skip(1)
            .filter_map(|l| {
                let from_end: Vec<&str> = l.rsplit(',').collect();
                let field = |col: usize| from_end[header.len() - 1 - col].to_string();
                (field(m_col) == metric).then(|| field(v_col))
            })
            .collect();
        assert!(!values.is_empty() && values.iter().all(|v| v == text), "CSV {metric} ({form}): {values:?}\n{csv}");
    }

    // Line-protocol export, and what the sink sent InfluxDB.
    let (status, line) = get(http, "/api/v1/export?from=0&sensor=aq-001&format=line").await;
    assert_eq!(status, 200, "{line}");
    for (metric, _, form, text) in CASES {
        let rows: Vec<&str> = line.lines().filter(|l| l.starts_with(&format!("{metric},"))).collect();
        assert!(!rows.is_empty() && rows.iter().all(|l| l.contains(&format!(" value={text},quality=0i "))), "export line {metric} ({form}): {rows:?}");
        let sent = wait_for(&format!("{metric} written to InfluxDB"), LIMIT, || {
            let rows: Vec<String> = written.lock().unwrap().iter().filter(|l| l.starts_with(&format!("{metric},"))).cloned().collect();
            async move { (!rows.is_empty()).then_some(rows) }
        })
        .await;
        assert!(sent.iter().all(|l| l.contains(&format!(" value={text},quality=0i "))), "sink {metric} ({form}): {sent:?}");
    }

    agent.shutdown().await;
    c.shutdown().await;
}
