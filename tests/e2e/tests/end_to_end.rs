//! Simulator → agent → broker → collector → store → HTTP API, on loopback,
//! with the embedded broker and with an external Mosquitto.

mod common;

use std::time::Duration;

use common::*;
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(30);

/// Forces a value on every point type and word order the simulator uses and
/// checks it arrives decoded exactly at the collector.
async fn forced_values_arrive_exactly(http: std::net::SocketAddr, city: &RunningCity) {
    let cases: [(&str, &str, f64); 9] = [
        ("aq-001", "pm25", 123.25),                    // f32 ABCD
        ("aq-001", "pm10", 77.5),                      // f32 CDAB
        ("aq-001", "no2", 41.125),                     // f32 BADC
        ("aq-001", "temperature_c", -12.5),            // i16 scale 0.1
        ("tr-001", "speed_kmh", 88.5),                 // f32 DCBA, input registers
        ("tr-001", "vehicle_count", 123456.0),         // u32 CDAB
        ("wl-001", "water_level_m", 3.25179265358979), // f64 ABCD
        ("wl-001", "pump_running", 1.0),               // discrete input
        ("ns-001", "noise_laeq", 71.5),                // MQTT JSON
    ];
    for (sensor, metric, value) in cases {
        city.control.force(sensor, metric, value);
    }
    for (sensor, metric, value) in cases {
        wait_for(&format!("{sensor}/{metric} = {value}"), LIMIT, || async move { latest(http, sensor, metric).await.filter(|v| (v - value).abs() < 1e-9) }).await;
    }
}

/// The counter register grows by one per read: stored values must strictly
/// increase (a repeat would be a duplicate), and every value missing from the
/// sequence must be a read the agent reports as failed (a timed-out read still
/// moves the device's counter), never a reading lost after it was taken.
async fn counter_is_gapless(http: std::net::SocketAddr, agent: &agent::Agent, sensor: &str, at_least: usize) {
    let values = wait_for(&format!("{at_least} counter values of {sensor}"), LIMIT, || async move {
        let v = series_values(http, sensor, "counter").await;
        (v.len() >= at_least).then_some(v)
    })
    .await;
    assert!(values.windows(2).all(|w| w[1] > w[0]), "counter of {sensor} repeats or goes back: {values:?}");
    let missing = values.last().unwrap() - values.len() as f64;
    let stats = agent.devices.iter().find(|d| d.sensor == sensor).expect("device stats").snapshot();
    assert!(missing <= (stats.errors * 2) as f64, "counter of {sensor} misses {missing} values but the agent reports only {} failed reads: {values:?}", stats.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_travel_from_devices_to_the_api_through_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let plan = City { air: 2, traffic: 1, water: 1, noise: 2 };
    let c = collector(dir.path(), None, &sim::run::catalogue_toml(&plan.sensors())).await;
    let broker = shared::url::BrokerUrl::parse(&c.mqtt_url).unwrap();
    let city = RunningCity::start(plan, Some((broker.host.clone(), broker.port)), Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let cfg = agent_config(dir.path(), "gw-test", &c.mqtt_url, &sim::run::modbus_toml(&devices, Duration::from_millis(200)), Some(&c.mqtt_url));
    let agent = agent::Agent::start(cfg).await.unwrap();

    forced_values_arrive_exactly(c.http_addr, &city).await;
    counter_is_gapless(c.http_addr, &agent, "aq-002", 20).await;

    // A noise sensor that publishes garbage is counted at the agent; the rest keeps flowing.
    let (client, mut el) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("bad-sensor", broker.host.clone(), broker.port), 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    client.publish("sensors/noise/ns-009", rumqttc::QoS::AtLeastOnce, false, "{not json").await.unwrap();
    let mqtt_stats = agent.devices.iter().find(|d| d.sensor.starts_with("mqtt[0]")).unwrap().clone();
    wait_for("the agent to count the bad payload", LIMIT, || {
        let s = mqtt_stats.clone();
        async move { (s.errors() >= 1).then_some(()) }
    })
    .await;
    assert!(mqtt_stats.snapshot().last_error.unwrap().contains("not JSON"));
    let before = series_values(c.http_addr, "aq-002", "counter").await.len();
    counter_is_gapless(c.http_addr, &agent, "aq-002", before + 5).await;

    // One device hangs (connected, never answers) and another drops off the
    // network: both are counted as errors, and the others keep delivering.
    city.control.set_silent("aq-001", true);
    let mut city = city;
    city.device_mut("wl-001").unwrap().take_offline();
    let errors_of = |sensor: &'static str| {
        let stats = agent.devices.iter().find(|d| d.sensor == sensor).unwrap().clone();
        move || {
            let stats = stats.clone();
            async move { (stats.errors() >= 2).then(|| stats.snapshot()) }
        }
    };
    let hung = wait_for("the hung device's errors", LIMIT, errors_of("aq-001")).await;
    assert!(hung.last_error.as_deref().unwrap_or("").contains("no answer within"), "{hung:?}");
    let gone = wait_for("the dropped device's errors", LIMIT, errors_of("wl-001")).await;
    assert!(gone.last_error.as_deref().unwrap_or("").contains("cannot connect"), "{gone:?}");
    let before = series_values(c.http_addr, "aq-002", "counter").await.len();
    counter_is_gapless(c.http_addr, &agent, "aq-002", before + 10).await;
    let tr_before = series_values(c.http_addr, "tr-001", "counter").await.len();
    wait_for("tr-001 to keep delivering", LIMIT, || async move { (series_values(c.http_addr, "tr-001", "counter").await.len() >= tr_before + 10).then_some(()) }).await;

    let sensors = get_json(c.http_addr, "/api/v1/sensors").await;
    assert_eq!(sensors.as_array().unwrap().len(), 6);
    for s in sensors.as_array().unwrap() {
        assert_eq!(s["catalogued"], true, "{s}");
        assert!(s["lat"].is_number() && s["owner"].is_string() && s["district"].is_string(), "{s}");
        assert!(s["metrics"].as_array().unwrap().iter().any(|m| m["value"].is_number()), "no latest value: {s}");
    }
    let gw = wait_for("gateway health", LIMIT, || async {
        let g = get_json(c.http_addr, "/api/v1/gateways").await;
        let gw = g.as_array().unwrap().iter().find(|g| g["id"] == "gw-test").cloned()?;
        (gw["status"] == "online" && gw["buffer_depth"].is_number()).then_some(gw)
    })
    .await;
    assert!(gw["readings_received"].as_u64().unwrap() > 0);
    assert_eq!(metric(c.http_addr, "citysense_readings_duplicate_total").await, 0.0);
    assert!(metric(c.http_addr, "citysense_readings_stored_total").await > 0.0);

    // Aggregation over the same data.
    let agg = get_json(c.http_addr, "/api/v1/series?sensor=aq-002&metric=counter&from=0&step=1h&agg=count").await;
    let counted: f64 = agg["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert!(counted >= 20.0, "{agg}");
    let (status, body) = get(c.http_addr, "/api/v1/series?sensor=aq-002&metric=counter&agg=median&step=1m").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("median"), "{body}");

    agent.shutdown().await;
    // After a clean stop the outbox is empty: everything was acknowledged.
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_travel_through_an_external_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::open(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let (url, port) = (mosquitto.url(), mosquitto.port);

    let plan = City { air: 1, traffic: 1, water: 1, noise: 1 };
    let c = collector(dir.path(), Some(&url), &sim::run::catalogue_toml(&plan.sensors())).await;
    let city = RunningCity::start(plan, Some(("127.0.0.1".into(), port)), Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let cfg = agent_config(dir.path(), "gw-mosq", &url, &sim::run::modbus_toml(&devices, Duration::from_millis(200)), Some(&url));
    let agent = agent::Agent::start(cfg).await.unwrap();

    forced_values_arrive_exactly(c.http_addr, &city).await;
    counter_is_gapless(c.http_addr, &agent, "aq-001", 20).await;
    assert_eq!(metric(c.http_addr, "citysense_readings_duplicate_total").await, 0.0);
    agent.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_twenty_four_live_sensors_within_twenty_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = demo::DemoOptions { data: Some(dir.path().to_path_buf()), http: Some("127.0.0.1:0".into()), control: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let demo = demo::Demo::start(opts).await.unwrap();
    let http = demo.collector.http_addr;
    let mut sse = SseClient::connect(http, "/api/v1/stream?types=alert").await;
    wait_for("24 sensors with current values", Duration::from_secs(20), || async move {
        let sensors = get_json(http, "/api/v1/sensors").await;
        let live = sensors.as_array()?.iter().filter(|s| s["metrics"].as_array().is_some_and(|m| m.iter().any(|m| m["value"].is_number()))).count();
        (live >= 24).then_some(())
    })
    .await;
    let history = get_json(http, "/api/v1/series?sensor=wl-001&metric=water_level_m&from=-1h").await;
    assert!(!history["points"].as_array().unwrap().is_empty(), "{history}");
    let (status, page) = get(http, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("/assets/app.js"), "{page}");
    let (status, script) = get(http, "/assets/app.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("/api/v1"), "the dashboard reads the API");
    assert_eq!(metric(http, "citysense_readings_duplicate_total").await, 0.0);

    // An anomaly forced through the simulator's control endpoint raises the
    // demo's PM2.5 rule; acknowledged and cleared, it resolves.
    let (status, body) = post(demo.control, "/force?sensor=aq-003&metric=pm25&value=180", "").await;
    assert_eq!(status, 200, "{body}");
    let fired = sse.next_where("alert", LIMIT, |v| v["event"] == "fired" && v["rule"] == "pm25-high").await;
    assert_eq!((fired["sensor"].as_str(), fired["value"].as_f64()), (Some("aq-003"), Some(180.0)));
    let (status, _) = post(http, &format!("/api/v1/alerts/{}/ack", fired["id"]), r#"{"by":"demo operator"}"#).await;
    assert_eq!(status, 200);
    sse.next_where("alert", LIMIT, |v| v["event"] == "acknowledged").await;
    post(demo.control, "/clear?sensor=aq-003", "").await;
    let resolved = sse.next_where("alert", LIMIT, |v| v["event"] == "resolved" && v["rule"] == "pm25-high").await;
    assert_eq!(resolved["id"], fired["id"]);
    let (status, body) = post(demo.control, "/force?sensor=aq-003&metric=pm25", "").await;
    assert_eq!(status, 400, "{body}");
    drop(sse);
    demo.shutdown().await;
}
