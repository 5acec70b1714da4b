//! The broker as a cluster: three NATS nodes installed from deploy/nats as
//! deploy/README.md says (node.conf as shipped, users made by add-user.sh)
//! with an MQTT listener each; a collector and an agent that list every node.
//! Killing the node an agent is on, then the collector's, costs a reconnect
//! each: every reading the devices gave is stored once, in order, and
//! delivery resumes within a bound the test prints. The cluster as shipped is
//! closed: no anonymous client, and a gateway writes and reads only its own topics.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(60);

/// Waits until `sensor`'s counter series has `n` more values than `from`
/// and no hole but where the agent counts a failed read, and checks the whole
/// series is strictly increasing (a repeat would be a reading stored twice).
/// A hole may stand for a moment: batches sent just before a node died are
/// resent after the agent's ack timeout, and those after them stored first.
async fn counter_grows(http: SocketAddr, agent: &agent::Agent, sensor: &str, from: usize, n: usize) -> Vec<f64> {
    let missing = |v: &[f64]| v.last().unwrap() - v.first().unwrap() + 1.0 - v.len() as f64;
    let failed = || agent.devices.iter().find(|d| d.sensor == sensor).expect("device stats").snapshot().errors;
    let values = wait_for(&format!("{n} more counter values of {sensor} (had {from}), every missing one a failed read"), LIMIT, || async move {
        let v = series_values_yet(http, sensor, "counter").await?;
        (v.len() >= from + n && missing(&v) <= (failed() * 2) as f64).then_some(v)
    })
    .await;
    assert!(values.windows(2).all(|w| w[1] > w[0]), "counter of {sensor} repeats or goes back: {values:?}");
    values
}

/// A series' values, or `None` while the collector cannot answer for it (a
/// collector sharing the log with one that just died: `cluster::history`).
async fn series_values_yet(http: SocketAddr, sensor: &str, metric: &str) -> Option<Vec<f64>> {
    let (status, body) = try_get(http, &format!("/api/v1/series?sensor={sensor}&metric={metric}&from=0")).await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    Some(v["points"].as_array()?.iter().filter_map(|p| p["value"].as_f64()).collect())
}

/// Waits until the agent's uplink is connected to a broker `ok` accepts.
async fn connected_where(agent: &agent::Agent, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut link = agent.link.clone();
    let l = tokio::time::timeout(LIMIT, link.wait_for(|l| l.connected && l.broker.as_deref().is_some_and(&ok)))
        .await
        .unwrap_or_else(|_| panic!("the agent did not connect {what}; link: {:?}", *agent.link.borrow()))
        .unwrap();
    l.broker.clone().unwrap()
}

const USERS: [(&str, &str, &str); 4] = [
    ("collector", "citysense-collector", "collector-secret"),
    ("gateway", "gw-cluster", "gw-cluster-secret"),
    ("gateway", "gw-other", "gw-other-secret"),
    ("reader", "duty-desk", "duty-desk-secret"),
];

/// Clusters running at once, at most: five of three nodes each, starting
/// together on two cores, left a node unhealthy after 30 s in about one run
/// of eight.
static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

fn cluster(dir: &Path) -> NatsCluster {
    NatsCluster::start(dir, &workspace().join("deploy"), 3, &USERS).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A collector on the cluster `brokers` (a TOML list), logged in as the
/// collectors' user; `extra` is more of its config (e.g. `[cluster]`).
async fn collector_on(dir: &Path, brokers: &str, catalogue: &str) -> collector::Collector {
    collector_with(dir, brokers, catalogue, "").await
}

async fn collector_with(dir: &Path, brokers: &str, catalogue: &str, extra: &str) -> collector::Collector {
    collector_in(dir, "collector", brokers, catalogue, extra).await
}

/// As `collector_with`, its data in `dir/data`.
async fn collector_in(dir: &Path, data: &str, brokers: &str, catalogue: &str, extra: &str) -> collector::Collector {
    let text = collector_text(dir, data, brokers, catalogue, extra);
    let cfg: collector::config::CollectorConfig = shared::config::parse("cluster collector", &text, dir).unwrap_or_else(|d| panic!("{d}"));
    collector::Collector::start(cfg).await.expect("collector starts")
}

/// The config of `collector_in`.
fn collector_text(dir: &Path, data: &str, brokers: &str, catalogue: &str, extra: &str) -> String {
    std::fs::write(dir.join("collector-password"), "collector-secret\n").unwrap();
    format!(
        "[mqtt]\nexternal = {brokers}\nusername = \"citysense-collector\"\npassword_file = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n\n{extra}\n{catalogue}",
        dir.join("collector-password").display(),
        dir.join(data).display()
    )
}

/// A collector in a process of its own (to be killed), with `collector_text`'s
/// config on a port of its own; its log in `dir/<data>.log`.
fn collector_process(dir: &Path, data: &str, brokers: &str, catalogue: &str, extra: &str) -> (Child, SocketAddr) {
    let port = free_port();
    let cfg = dir.join(format!("{data}.toml"));
    let text = collector_text(dir, data, brokers, catalogue, extra);
    std::fs::write(&cfg, text.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""), 1)).unwrap();
    let log = std::fs::File::create(dir.join(format!("{data}.log"))).unwrap();
    let child = std::process::Command::new(bin("citysense-collector"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Child(child), ([127, 0, 0, 1], port).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_agents_node_and_then_the_collectors_loses_nothing() {
    kill_nodes_under_load(Batches::OffMqtt).await;
}

/// Where the collector takes batches from.
#[derive(Debug, Clone, Copy)]
enum Batches {
    OffMqtt,
    /// The cluster's batch log, all of it.
    Log,
    /// The batch log split into 4 partitions, held by this collector alone:
    /// its leases and the work state it keeps on the cluster go through
    /// each node's death and the leader elections after it.
    Partitions,
}

/// The same with the collector reading batches from the cluster's log, whose
/// stream and consumer lose a replica (and maybe their leader) with each node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nodes_under_the_batch_log_loses_nothing() {
    kill_nodes_under_load(Batches::Log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nodes_under_a_partitioned_batch_log_loses_nothing() {
    kill_nodes_under_load(Batches::Partitions).await;
}

async fn kill_nodes_under_load(batches: Batches) {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = cluster(dir.path());

    let plan = City { air: 1, traffic: 1, water: 0, noise: 0 };
    // The collector starts on node 1, the agent on node 2.
    let log = match batches {
        Batches::OffMqtt => String::new(),
        Batches::Log => format!("[cluster]\nnats = {}\n", nats.nats_list(&[0, 1, 2])),
        Batches::Partitions => format!("[cluster]\nnats = {}\npartitions = 4\n", nats.nats_list(&[0, 1, 2])),
    };
    let c = collector_with(dir.path(), &nats.mqtt_list(&[0, 1, 2]), &sim::run::catalogue_toml(&plan.sensors()), &log).await;
    let ids: Vec<String> = plan.sensors().iter().map(|s| s.id.to_string()).collect();
    let city = RunningCity::start(plan, None, Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    std::fs::write(dir.path().join("gw-password"), "gw-cluster-secret\n").unwrap();
    let text = agent_toml(dir.path(), "gw-cluster", &nats.mqtt_list(&[1, 2, 0]), &sim::run::modbus_toml(&devices, Duration::from_millis(100)), None)
        .replace("[uplink]\n", "[uplink]\nusername = \"gw-cluster\"\npassword_file = \"gw-password\"\n");
    let text = text.replace("gw-password", &dir.path().join("gw-password").display().to_string());
    let cfg = shared::config::parse("cluster agent", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let agent = agent::Agent::start(cfg).await.unwrap();
    // Node 2 first in its list, or node 3 when node 2 refused its first
    // CONNECT while JetStream settled: not the collector's node 1.
    let node1 = nats.mqtt_url(0);
    let on = connected_where(&agent, "to node 2 or 3", |b| b != node1).await;
    let agents = if on == nats.mqtt_url(1) { 1 } else { 2 };
    let before = counter_grows(c.http_addr, &agent, "aq-001", 0, 10).await.len();

    // The agent's node dies: it moves to another (node 3 next in its list,
    // or node 1 when node 3 refuses it while JetStream elects new leaders).
    let killed = Instant::now();
    nats.kill(agents);
    let now_on = connected_where(&agent, "to another node", |b| b != on).await;
    let moved = killed.elapsed();
    let after_agent_node = counter_grows(c.http_addr, &agent, "aq-001", before, 1).await.len();
    let first_stored = killed.elapsed();
    counter_grows(c.http_addr, &agent, "aq-001", after_agent_node, 10).await;

    // The collector's node dies (with the agent's still down: one node of
    // three left would have no JetStream majority, so it comes back first).
    nats.restart(agents).unwrap();
    let before = series_values(c.http_addr, "aq-001", "counter").await.len();
    let killed = Instant::now();
    nats.kill(0);
    counter_grows(c.http_addr, &agent, "aq-001", before, 1).await;
    let collector_gap = killed.elapsed();
    let before = series_values(c.http_addr, "aq-001", "counter").await.len();
    counter_grows(c.http_addr, &agent, "aq-001", before, 10).await;
    nats.restart(0).unwrap();

    counter_grows(c.http_addr, &agent, "tr-001", 0, 20).await;
    agent.shutdown().await;
    // Nothing stored twice anywhere: a reading stored again at its place in a
    // series would be counted twice and kept once. Batches still in flight
    // when the agent stopped may land meanwhile, so wait for the two to agree.
    let (http, ids) = (c.http_addr, &ids);
    wait_for("every stored reading to be one sample", LIMIT, || async move {
        let counted = metric(http, "citysense_readings_stored_total").await as usize;
        (counted == stored_everywhere(http, ids).await).then_some(())
    })
    .await;
    eprintln!(
        "batches {batches:?}: agent's node killed: on {now_on} after {moved:?}, first reading stored again after {first_stored:?}; collector's node killed: next reading stored after {collector_gap:?}"
    );
    c.shutdown().await;
}

/// Every stored sample of every series of the sensors `ids`, counted through the API.
async fn stored_everywhere(http: SocketAddr, ids: &[String]) -> usize {
    let sensors = get_json(http, "/api/v1/sensors").await;
    let mut n = 0;
    for s in sensors.as_array().unwrap().iter().filter(|s| ids.iter().any(|id| s["id"] == id.as_str())) {
        for m in s["metrics"].as_array().unwrap() {
            n += series_values(http, s["id"].as_str().unwrap(), m["metric"].as_str().unwrap()).await.len();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_as_shipped_admits_only_its_users_each_to_its_own_topics() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nats = cluster(dir.path());
    let c = collector_on(dir.path(), &nats.mqtt_list(&[0, 1, 2]), "").await;
    let url = nats.mqtt_url(1);
    let login = |name: &str, password: &str| Identity { login: Some((name.into(), password.into())), ..Default::default() };

    let anonymous = FakeGateway::connect_as(&url, "gw-cluster", Identity::default()).await;
    assert!(anonymous.is_err(), "an anonymous client was let in");
    let wrong = FakeGateway::connect_as(&url, "gw-cluster", login("gw-cluster", "guess")).await;
    assert!(wrong.is_err(), "a wrong password was let in");

    // gw-other's own batch goes through.
    let reading = |v: f64| shared::Reading { seq: shared::Seq(0), sensor: "aq-other".into(), metric: "pm25".into(), ts_ms: now_ms(), value: v, quality: shared::Quality::Good };
    let mut other = FakeGateway::connect_as(&url, "gw-other", login("gw-other", "gw-other-secret")).await.unwrap();
    // Sent again until acknowledged, as an agent does: the collector's
    // subscription reaches node 1 a moment after its SUBACK from node 0.
    other.send_until_acked(vec![reading(1.0)], LIMIT).await;
    drop(other);
    // Logged in as itself, it publishes a batch on gw-cluster's topic and asks
    // for gw-cluster's acks: the broker passes on neither.
    let mut intruder = FakeGateway::connect_as(&url, "gw-other", login("gw-other", "gw-other-secret")).await.unwrap();
    let (forged, _) = intruder.batch("gw-cluster", vec![reading(999.0)]);
    intruder.client.publish(shared::topics::up("gw-cluster"), rumqttc::QoS::AtLeastOnce, false, forged).await.unwrap();
    intruder.client.subscribe(shared::topics::ack("gw-cluster"), rumqttc::QoS::AtLeastOnce).await.unwrap();
    let dropped = intruder.dropped_within(Duration::from_secs(2)).await;
    let foreign = intruder.foreign.load(std::sync::atomic::Ordering::Relaxed);
    drop(intruder);
    // A batch of its own afterwards: once it is acknowledged, the forged one would have arrived before it.
    let mut other = FakeGateway::connect_as(&url, "gw-other", login("gw-other", "gw-other-secret")).await.unwrap();
    let mut batch = other.batch("gw-other", vec![reading(1.0), reading(2.0)]);
    other.client.publish(shared::topics::up("gw-other"), rumqttc::QoS::AtLeastOnce, false, std::mem::take(&mut batch.0)).await.unwrap();
    other.wait_acked(batch.1, LIMIT).await;
    eprintln!("the intruder's connection was {}", if dropped { "closed by the broker" } else { "left open" });
    let gateways = get_json(c.http_addr, "/api/v1/gateways?known=false").await;
    let ids: Vec<&str> = gateways.as_array().unwrap().iter().filter_map(|g| g["id"].as_str()).collect();
    assert!(ids.contains(&"gw-other") && !ids.contains(&"gw-cluster"), "gateways heard: {ids:?}");
    assert_eq!(foreign, 0, "gw-other read another gateway's messages");
    c.shutdown().await;
}

/// Cluster mode: batches go into the cluster's replicated log before the
/// collector reads them. A batch published while the collector is down, and
/// with one node of the cluster dead too, is stored when the collector comes
/// back, from the log alone: the gateway here never resends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_in_the_replicated_log_while_the_collector_is_down() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = cluster(dir.path());
    let cluster_mode = format!("[cluster]\nnats = {}\n", nats.nats_list(&[0, 1, 2]));
    let brokers = nats.mqtt_list(&[0, 1, 2]);
    let c = collector_with(dir.path(), &brokers, "", &cluster_mode).await;
    let url = nats.mqtt_url(1);
    let who = Identity { login: Some(("gw-other".into(), "gw-other-secret".into())), ..Default::default() };
    let mut gw = FakeGateway::connect_as(&url, "gw-other", who).await.unwrap();
    let reading =
        |v: f64| shared::Reading { seq: shared::Seq(0), sensor: "aq-logged".into(), metric: "pm25".into(), ts_ms: now_ms() + v as i64, value: v, quality: shared::Quality::Good };
    gw.send_until_acked(vec![reading(1.0), reading(2.0)], LIMIT).await;

    c.shutdown().await;
    let second = gw.send(vec![reading(3.0), reading(4.0), reading(5.0)]).await;
    // Once node 2's replica of the log holds it (two batches), node 1 dies:
    // the two left are a majority and have it. (Killed before the log had
    // it, the batch would be the agent's to resend; this gateway never does.)
    nats.wait_stream_messages(1, collector::cluster::log::STREAM, 2).unwrap();
    nats.kill(0);
    let c = collector_with(dir.path(), &nats.mqtt_list(&[1, 2, 0]), "", &format!("[cluster]\nnats = {}\n", nats.nats_list(&[1, 2, 0]))).await;
    gw.wait_acked(second, LIMIT).await;
    let values = series_values(c.http_addr, "aq-logged", "pm25").await;
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0], "each reading stored once, in order");
    assert_eq!(metric(c.http_addr, "citysense_readings_stored_total").await, 3.0, "the restarted collector stored the logged batch once");
    c.shutdown().await;
}

/// Every point of one series: (time, value).
async fn points(http: SocketAddr, sensor: &str, metric: &str) -> Vec<(i64, f64)> {
    let v = get_json(http, &format!("/api/v1/series?sensor={sensor}&metric={metric}&from=0")).await;
    v["points"].as_array().unwrap().iter().map(|p| (p["ts_ms"].as_i64().unwrap(), p["value"].as_f64().unwrap())).collect()
}

async fn speaks(http: SocketAddr) -> bool {
    metric(http, "citysense_speaker").await == 1.0
}

/// `speaks`, for a collector that may not be listening yet.
async fn speaks_yet(http: SocketAddr) -> bool {
    try_get(http, "/metrics").await.ok().and_then(|(_, body)| metric_in(&body, "citysense_speaker")) == Some(1.0)
}

/// Several collectors on one batch log: each stores the whole city, one at a
/// time publishes to the world. The speaker, a collector in its own
/// process, is killed (SIGKILL); the other keeps storing and takes over its
/// feeds; the dead one, restarted on an empty disk, reads the log from its
/// start; a node dies and comes back; both end with the very same series. A subscriber to the cluster's alert feed and a webhook receiver
/// hear each alert change once, not once per collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_on_one_log_each_serve_the_whole_city_and_one_speaks() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = cluster(dir.path());
    let plan = City { air: 1, traffic: 1, water: 0, noise: 0 };
    let catalogue = sim::run::catalogue_toml(&plan.sensors());
    // A clock of the gateway more than a second off fires `clock`: on a
    // replay, judged by the replaying collector's clock, the first batches
    // would (logged seconds before it reads them). The log stamps a batch
    // when a stream replica takes it, so a batch published while JetStream
    // elects a leader after a node died shows that wait (1.8, 2.0 and 5.0 s
    // seen): the same on every collector, checked below.
    // Every collector delivers to one webhook receiver, which counts what it gets.
    let hooked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let sink = hooked.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let rule = format!(
        "[[rule]]\nid = \"counting\"\nkind = \"threshold\"\nmetric = \"counter\"\nop = \">\"\nvalue = 0\nseverity = \"warning\"\n\n[[rule]]\nid = \"clock\"\nkind = \"clock_skew\"\nvalue = 1\nseverity = \"warning\"\n\n[[rule]]\nid = \"hot\"\nkind = \"threshold\"\nmetric = \"pm25\"\nop = \">\"\nvalue = 100\nseverity = \"critical\"\nselect = {{ sensor = \"aq-gap\" }}\n\n[[webhook]]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n"
    );
    let brokers = nats.mqtt_list(&[0, 1, 2]);
    let nats_list = nats.nats_list(&[0, 1, 2]);
    let cluster_mode = |name: &str| format!("[cluster]\nname = \"{name}\"\nnats = {nats_list}\n");
    // Collector a in a process of its own, to be killed; it speaks first.
    let (a, ha) = collector_process(dir.path(), "a", &brokers, &format!("{rule}\n{catalogue}"), &cluster_mode("a"));
    wait_for("collector a to speak for the cluster", LIMIT, || async move { speaks_yet(ha).await.then_some(()) }).await;
    let b = collector_in(dir.path(), "b", &nats.mqtt_list(&[1, 2, 0]), &format!("{rule}\n{catalogue}"), &cluster_mode("b")).await;
    let hb = b.http_addr;
    // b's live stream, from before the first reading: it carries each of b's stored readings once.
    let mut live_b = SseClient::connect(hb, "/api/v1/stream?types=reading&sensor=aq-001").await;
    let mut alerts = json_feed_as(&nats.mqtt_url(2), "duty-desk", Some(("duty-desk", "duty-desk-secret")), "citysense/v1/alerts/#", rumqttc::QoS::AtMostOnce).await;
    let mut live = json_feed_as(&nats.mqtt_url(2), "duty-desk-live", Some(("duty-desk", "duty-desk-secret")), "citysense/v1/live/aq-001/counter", rumqttc::QoS::AtMostOnce).await;

    let city = RunningCity::start(plan, None, Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    std::fs::write(dir.path().join("gw-password"), "gw-cluster-secret\n").unwrap();
    let text = agent_toml(dir.path(), "gw-cluster", &nats.mqtt_list(&[1, 2, 0]), &sim::run::modbus_toml(&devices, Duration::from_millis(100)), None)
        .replace("[uplink]\n", &format!("[uplink]\nusername = \"gw-cluster\"\npassword_file = \"{}\"\n", dir.path().join("gw-password").display()));
    let agent = agent::Agent::start(shared::config::parse("cluster agent", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"))).await.unwrap();
    counter_grows(ha, &agent, "aq-001", 0, 10).await;
    counter_grows(hb, &agent, "aq-001", 0, 10).await;
    for http in [ha, hb] {
        let sensors = get_json(http, "/api/v1/sensors").await;
        assert_eq!(sensors.as_array().unwrap().len(), 2, "each collector lists the whole city: {sensors}");
    }

    // A duty officer acknowledges the alert on the collector that does not
    // speak: the speaker shows it acknowledged too, and announces it.
    assert!(!speaks(hb).await, "two speakers");
    let (speaker, other) = (a, b);
    let (hs, hf) = (ha, hb);
    let open = wait_for("the alert on the follower", LIMIT, || async move {
        let v = get_json(hf, "/api/v1/alerts?state=firing&sensor=aq-001").await;
        v.as_array()?.iter().find(|x| x["rule"] == "counting").cloned()
    })
    .await;
    let (status, body) = post(hf, &format!("/api/v1/alerts/{}/ack", open["id"]), r#"{"by":"duty officer Li"}"#).await;
    assert_eq!(status, 200, "{body}");
    let acked = |http: SocketAddr| async move {
        let v = get_json(http, "/api/v1/alerts?sensor=aq-001").await;
        v.as_array()?.iter().find(|x| x["rule"] == "counting" && x["state"] == "acknowledged" && x["acked_by"] == "duty officer Li").map(|_| ())
    };
    wait_for("the speaker to show the acknowledgement made on the other collector", LIMIT, || acked(hs)).await;
    // Once the follower has seen the speaker alive after the acknowledgement,
    // it knows the speaker announced it: it will not announce it again.
    let ack_ms = serde_json::from_str::<serde_json::Value>(&body).unwrap()["updated_ts_ms"].as_i64().unwrap();
    wait_for("the follower to see the speaker after the acknowledgement", LIMIT, || async move { (metric(hf, "citysense_speaker_seen_ms").await > ack_ms as f64).then_some(()) })
        .await;

    // The speaker is killed; the other was storing all along and takes its feeds over.
    let ho = other.http_addr;
    let before = series_values(ho, "aq-001", "counter").await.len();
    let killed = Instant::now();
    drop(speaker);
    counter_grows(ho, &agent, "aq-001", before, 1).await;
    let stored_after = killed.elapsed();
    // While the dead speaker's lease runs out, an alert fires on the other:
    // announced and delivered once it speaks, by it.
    let who = Identity { login: Some(("gw-other".into(), "gw-other-secret".into())), ..Default::default() };
    let mut gw = FakeGateway::connect_as(&nats.mqtt_url(2), "gw-other", who).await.unwrap();
    let hot = shared::Reading { seq: shared::Seq(0), sensor: "aq-gap".into(), metric: "pm25".into(), ts_ms: now_ms(), value: 150.0, quality: shared::Quality::Good };
    let seq = gw.send(vec![hot]).await;
    gw.wait_acked(seq, LIMIT).await;
    assert!(!speaks(ho).await, "the lease outlived its holder's death by less than a batch's way through the log");
    wait_for("the other collector to speak", LIMIT, || async move { speaks(ho).await.then_some(()) }).await;
    let speaking_after = killed.elapsed();

    // The dead collector comes back on an empty disk (its consumer in the
    // cluster is further on): it reads the log from its start.
    let name = "a".to_string();
    let c = collector_in(dir.path(), &format!("{name}-emptied"), &brokers, &format!("{rule}\n{catalogue}"), &cluster_mode(&name)).await;
    let hc = c.http_addr;
    counter_grows(hc, &agent, "aq-001", 0, 10).await;
    assert!(!speaks(hc).await, "a second speaker");
    // The agent's node dies (and with it a replica of the log, and maybe the
    // lease's leader): both collectors go on storing; the node comes back.
    // What was stored before the node dies under the speaker's connection
    // (its QoS 0 live messages in flight then are lost with it).
    let stored_before_node_dies = series_values(ho, "aq-001", "counter").await;
    let node_killed = Instant::now();
    nats.kill(1);
    for http in [ho, hc] {
        let had = series_values(http, "aq-001", "counter").await.len();
        counter_grows(http, &agent, "aq-001", had, 5).await;
    }
    let node_gap = node_killed.elapsed();
    nats.restart(1).unwrap();
    agent.shutdown().await;
    let mut ids: Vec<String> = plan.sensors().iter().map(|s| s.id.to_string()).collect();
    ids.push("aq-gap".into());
    for sensor in &ids[..2] {
        for m in ["counter"] {
            let (sensor, ids) = (sensor.as_str(), &ids);
            let on_other = wait_for("both collectors to hold the same series", LIMIT, || async move {
                let (o, c) = (points(ho, sensor, m).await, points(hc, sensor, m).await);
                (o == c && metric(ho, "citysense_readings_stored_total").await as usize == stored_everywhere(ho, ids).await).then_some(o)
            })
            .await;
            assert!(!on_other.is_empty());
        }
    }
    let stored_on_b = series_values(ho, "aq-001", "counter").await;
    let streamed: Vec<f64> =
        live_b.until_quiet("reading", Duration::from_secs(2)).await.iter().filter(|v| v["metric"] == "counter").map(|v| v["value"].as_f64().unwrap()).collect();
    assert_eq!(streamed, stored_on_b, "b's live stream carries each reading it stored once, in order");
    // The MQTT live feed carried every one of those readings, the ones stored
    // while the cluster had no speaker too (put on it by the new speaker);
    // the last ones before the node died may have been in flight.
    let mut heard = std::collections::BTreeSet::new();
    while let Ok(Some((_, v))) = tokio::time::timeout(Duration::from_secs(2), live.recv()).await {
        heard.insert(v["value"].as_f64().unwrap() as i64);
    }
    let settled = &stored_before_node_dies[..stored_before_node_dies.len().saturating_sub(5)];
    let unheard: Vec<f64> = settled.iter().copied().filter(|v| !heard.contains(&(*v as i64))).collect();
    assert!(unheard.is_empty(), "stored but never on the MQTT live feed: {unheard:?} (of {})", settled.len());
    let first_value = stored_on_b[0];
    assert_eq!(series_values(hc, "aq-001", "counter").await[0], first_value, "the empty-disk collector starts where the city's data starts");

    // Every collector fired the alert (on the replay too); the subscriber heard it once.
    for http in [ho, hc] {
        let open = get_json(http, "/api/v1/alerts?state=open").await;
        assert!(open.as_array().is_some_and(|a| a.iter().any(|x| x["rule"] == "counting" && x["sensor"] == "aq-001")), "{open}");
    }
    // One log, judged the same on both: a clock alert from the cluster's own
    // delay (a batch that waited while JetStream elected a leader) fires on
    // both or on neither; judged by the time a collector read it, the
    // replaying collector would have clock alerts of its own.
    let skews = |http: SocketAddr| async move {
        let all = get_json(http, "/api/v1/alerts").await;
        let mut offsets: Vec<f64> = all.as_array().unwrap().iter().filter(|x| x["rule"] == "clock").map(|x| x["value"].as_f64().unwrap()).collect();
        offsets.sort_by(f64::total_cmp);
        offsets
    };
    assert_eq!(skews(hc).await, skews(ho).await, "a batch judged by the time it was read, not logged");
    let mut fired = Vec::new();
    while let Ok(Some((topic, ev))) = tokio::time::timeout(Duration::from_secs(2), alerts.recv()).await {
        fired.push((topic, ev["sensor"].clone(), ev["event"].clone()));
    }
    let on_aq = fired.iter().filter(|(t, s, e)| s == "aq-001" && t.contains("warning") && e == "fired").count();
    assert_eq!(on_aq, 1, "one crossing, one alert on the feed: {fired:?}");
    let acks = fired.iter().filter(|(_, s, e)| s == "aq-001" && e == "acknowledged").count();
    assert_eq!(acks, 1, "one acknowledgement, announced once: {fired:?}");
    let gap = fired.iter().filter(|(_, s, e)| s == "aq-gap" && e == "fired").count();
    assert_eq!(gap, 1, "the alert fired while the cluster had no speaker, announced once it had: {fired:?}");
    // Webhooks: each change once, the one of the gap included.
    let delivered = |sensor: &'static str, event: &'static str| {
        let hooked = hooked.clone();
        move || {
            let n = hooked.lock().unwrap().iter().filter(|v| v["sensor"] == sensor && v["event"] == event).count();
            async move { (n > 0).then_some(n) }
        }
    };
    for (sensor, event) in [("aq-001", "fired"), ("aq-001", "acknowledged"), ("aq-gap", "fired")] {
        let n = wait_for(&format!("the webhook delivery of {sensor} {event}"), LIMIT, delivered(sensor, event)).await;
        assert_eq!(n, 1, "{sensor} {event} delivered {n} times: {:?}", hooked.lock().unwrap());
    }
    // The collector restarted on an empty disk learnt the acknowledgement too.
    wait_for("the restarted collector to show the acknowledgement", LIMIT, || acked(hc)).await;
    eprintln!("node killed: 5 more readings on both collectors after {node_gap:?}; speaker killed: next reading stored after {stored_after:?}, the other collector speaking after {speaking_after:?}");
    other.shutdown().await;
    c.shutdown().await;
}

/// Bad input through the log gets what it gets in one process: refused and
/// counted by reason. The log does not stick on it (a good batch after it is
/// stored), and a collector restarted on the same disk does not read it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_in_the_log_is_refused_and_counted_once() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nats = cluster(dir.path());
    let cluster_mode = format!("[cluster]\nname = \"solo\"\nnats = {}\n", nats.nats_list(&[0, 1, 2]));
    let brokers = nats.mqtt_list(&[0, 1, 2]);
    let c = collector_with(dir.path(), &brokers, "", &cluster_mode).await;
    let who = Identity { login: Some(("gw-other".into(), "gw-other-secret".into())), ..Default::default() };
    let mut gw = FakeGateway::connect_as(&nats.mqtt_url(1), "gw-other", who).await.unwrap();
    let reading =
        |v: f64| shared::Reading { seq: shared::Seq(0), sensor: "aq-bad".into(), metric: "pm25".into(), ts_ms: now_ms() + v as i64, value: v, quality: shared::Quality::Good };
    // A good batch through first, sent until acknowledged: a batch published
    // on node 1 before the collector's start reached it would be dropped.
    gw.send_until_acked(vec![reading(0.5)], LIMIT).await;
    // Its first byte is no batch format version.
    gw.client.publish(shared::topics::up("gw-other"), rumqttc::QoS::AtLeastOnce, false, b"not a batch".to_vec()).await.unwrap();
    let seq = gw.send(vec![reading(1.0)]).await;
    gw.wait_acked(seq, LIMIT).await;
    assert_eq!(rejected(c.http_addr, "unknown_version").await, 1.0, "refused and counted as in one process");
    assert_eq!(series_values(c.http_addr, "aq-bad", "pm25").await, [0.5, 1.0]);
    c.shutdown().await;

    let c = collector_with(dir.path(), &brokers, "", &cluster_mode).await;
    let seq = gw.send(vec![reading(2.0)]).await;
    gw.wait_acked(seq, LIMIT).await;
    assert_eq!(series_values(c.http_addr, "aq-bad", "pm25").await, [0.5, 1.0, 2.0]);
    assert_eq!(rejected(c.http_addr, "unknown_version").await, 0.0, "the restarted collector read the bad batch again");
    c.shutdown().await;
}

/// Incident work shared by the collectors of a cluster: each groups the
/// alert into an incident of its own; what an operator does on one (an
/// acknowledgement, a note, a transfer, a silence) and what command does on
/// the other end up the same on both, and on a collector started again on an
/// empty disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_work_done_on_one_collector_is_seen_on_all() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nats = cluster(dir.path());
    let tokens = [("commander", "command", ""), ("water-op", "operator", "department = \"water\"\n")];
    let mut config = String::from(
        "[[sensor]]\nid = \"wl-001\"\nkind = \"water_level\"\ndistrict = \"Xihu\"\nowner = \"Water Resources Bureau\"\ngateway = \"gw-other\"\n\n\
         [[rule]]\nid = \"river-high\"\nkind = \"threshold\"\nmetric = \"water_level_m\"\nop = \">\"\nvalue = 3.0\nseverity = \"critical\"\n\n\
         [[department]]\nid = \"water\"\nname = \"Water Authority\"\nowners = [\"Water Resources Bureau\"]\n\n\
         [[department]]\nid = \"roads\"\nname = \"Roads and Drainage\"\n\n",
    );
    for (name, role, dept) in tokens {
        config.push_str(&format!("[[auth.token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n{dept}\n", shared::auth::sha256_hex(&format!("{name}-token"))));
    }
    let nats_list = nats.nats_list(&[0, 1, 2]);
    let cluster_mode = |name: &str| format!("[cluster]\nname = \"{name}\"\nnats = {nats_list}\n");
    let a = collector_in(dir.path(), "a", &nats.mqtt_list(&[0, 1, 2]), &config, &cluster_mode("a")).await;
    let b = collector_in(dir.path(), "b", &nats.mqtt_list(&[1, 2, 0]), &config, &cluster_mode("b")).await;
    let (ha, hb) = (a.http_addr, b.http_addr);

    let who = Identity { login: Some(("gw-other".into(), "gw-other-secret".into())), ..Default::default() };
    let mut gw = FakeGateway::connect_as(&nats.mqtt_url(2), "gw-other", who).await.unwrap();
    let high = shared::Reading { seq: shared::Seq(0), sensor: "wl-001".into(), metric: "water_level_m".into(), ts_ms: now_ms(), value: 3.4, quality: shared::Quality::Good };
    gw.send_until_acked(vec![high], LIMIT).await;

    let call = |http: SocketAddr, who: &'static str, method: &'static str, path: String, body: &'static str| async move {
        let (status, text) = request_as(http, &format!("{who}-token"), method, &path, body).await;
        assert!((200..300).contains(&status), "{method} {path} as {who}: {status} {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    // Each collector's incident, by its own id.
    let incident = |http: SocketAddr| async move {
        let (status, text) = request_as(http, "commander-token", "GET", "/api/v1/incidents", "").await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap().as_array().and_then(|l| l.first().cloned())
    };
    let on_a = wait_for("collector a to open the incident", LIMIT, || incident(ha)).await;
    let on_b = wait_for("collector b to open the incident", LIMIT, || incident(hb)).await;
    let (ia, ib) = (on_a["id"].as_u64().unwrap(), on_b["id"].as_u64().unwrap());

    // The water desk on a; command on b, after a's work has reached it.
    call(ha, "water-op", "POST", format!("/api/v1/incidents/{ia}/acknowledge"), r#"{"note":"crew on its way"}"#).await;
    call(ha, "water-op", "POST", format!("/api/v1/incidents/{ia}/note"), r#"{"text":"sluice 3 opened"}"#).await;
    let silence = call(
        ha,
        "water-op",
        "POST",
        "/api/v1/silences".into(),
        r#"{"match":{"sensor":"wl-002"},"schedule":{"type":"once","from_ms":0,"until_ms":4102444800000},"comment":"gauge swap"}"#,
    )
    .await;
    let noted = |http: SocketAddr, id: u64, text: &'static str| async move {
        let (_, body) = request_as(http, "commander-token", "GET", &format!("/api/v1/incidents/{id}"), "").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["timeline"].as_array()?.iter().any(|e| e["text"] == text).then_some(())
    };
    wait_for("a's note on b", LIMIT, || noted(hb, ib, "sluice 3 opened")).await;
    call(hb, "commander", "POST", format!("/api/v1/incidents/{ib}/transfer"), r#"{"department":"roads","reason":"a blocked drain, not the river"}"#).await;
    wait_for("b's transfer on a", LIMIT, || noted(ha, ia, "a blocked drain, not the river")).await;

    // The same incident on both: state, owner and timeline, but for each
    // collector's own: alert ids, and the time it fired the alert (its clock
    // when it evaluated the reading), with what counts from it (the opening,
    // deadlines). The work, by whom and when, is the same to the millisecond.
    let same = |v: serde_json::Value| {
        let mut v = v;
        for own in ["id", "opened_ms", "last_alert_ms", "deadlines", "overdue"] {
            v.as_object_mut().unwrap().remove(own);
        }
        for l in v["alerts"].as_array_mut().unwrap() {
            l.as_object_mut().unwrap().retain(|k, _| k != "id" && k != "ts_ms");
        }
        for e in v["timeline"].as_array_mut().unwrap() {
            let e = e.as_object_mut().unwrap();
            e.remove("alert");
            if !e.contains_key("work_id") {
                e.remove("ts_ms");
            }
        }
        v
    };
    let got = |http: SocketAddr, id: u64| async move { same(call(http, "commander", "GET", format!("/api/v1/incidents/{id}"), "").await) };
    let (va, vb) = (got(ha, ia).await, got(hb, ib).await);
    assert_eq!(va, vb, "the incident differs between the collectors");
    assert_eq!((va["status"].as_str(), va["department"].as_str(), va["timeline"].as_array().unwrap().len()), (Some("assigned"), Some("roads"), 5), "{va}");
    let silences = |http: SocketAddr| async move {
        let all = call(http, "commander", "GET", "/api/v1/silences".into(), "").await;
        all.as_array().unwrap().iter().map(|s| (s["comment"].clone(), s["created_by"].clone(), s["created_ms"].clone())).collect::<Vec<_>>()
    };
    let made = vec![(silence["comment"].clone(), silence["created_by"].clone(), silence["created_ms"].clone())];
    wait_for("a's silence on b", LIMIT, || async { (silences(hb).await == made).then_some(()) }).await;

    // a is replaced by a collector of its name on an empty disk: it learns all of it from the cluster.
    a.shutdown().await;
    let c = collector_in(dir.path(), "a-emptied", &nats.mqtt_list(&[2, 0, 1]), &config, &cluster_mode("a")).await;
    let hc = c.http_addr;
    let on_c = wait_for("the emptied collector to open the incident", LIMIT, || incident(hc)).await;
    let ic = on_c["id"].as_u64().unwrap();
    wait_for("the transfer on the emptied collector", LIMIT, || noted(hc, ic, "a blocked drain, not the river")).await;
    assert_eq!(got(hc, ic).await, vb, "the emptied collector's incident differs");
    assert_eq!(silences(hc).await, made);
    // Deleted on b: gone from the others too.
    let b_sid = call(hb, "commander", "GET", "/api/v1/silences".into(), "").await[0]["id"].as_u64().unwrap();
    call(hb, "water-op", "DELETE", format!("/api/v1/silences/{b_sid}"), "").await;
    wait_for("the deletion on the emptied collector", LIMIT, || async { silences(hc).await.is_empty().then_some(()) }).await;
    b.shutdown().await;
    c.shutdown().await;
}

/// Compose's `${NAME}` and `${NAME:?message}` in `v`, from `vars`; a name not there fails.
fn interpolate(v: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').unwrap_or_else(|| panic!("`{v}`: an unclosed ${{")) + at;
        let name = rest[at + 2..end].split(':').next().unwrap();
        let value = vars.iter().find(|(k, _)| *k == name).unwrap_or_else(|| panic!("`{v}` wants {name}, which deploy/README.md does not have the user set")).1;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out + rest
}

/// deploy/nats/compose.yaml as compose would run it, on loopback: each NATS
/// node started with node.conf and users.conf where compose mounts them and
/// the environment compose gives it (its listeners and routes moved to
/// loopback ports, its volume to a directory here); three collectors of
/// deploy/nats/collector.toml as shipped, named by the host names compose
/// gives them, with the mounted paths changed. The cluster forms, and every
/// collector stores every batch of a gateway that publishes to any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_forms_a_cluster_whose_collectors_each_store_every_batch() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let deploy = workspace().join("deploy");
    let compose = std::fs::read_to_string(deploy.join("nats/compose.yaml")).unwrap();
    let doc = &yaml_rust2::YamlLoader::load_from_str(&compose).unwrap()[0];
    let services = &doc["services"];
    let strings = |y: &yaml_rust2::Yaml| y.as_vec().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let nodes: Vec<Vec<(String, String)>> = (1..=3)
        .map(|n| {
            let s = &services[format!("nats-{n}").as_str()];
            assert_eq!(strings(&s["command"]), ["nats-server", "-c", "/etc/nats/node.conf"], "nats-{n}");
            let volumes = strings(&s["volumes"]);
            for mount in ["./node.conf:/etc/nats/node.conf:ro", "./users.conf:/etc/nats/users.conf:ro", &format!("nats-{n}:/data")] {
                assert!(volumes.iter().any(|v| v == mount), "nats-{n} does not mount {mount}: {volumes:?}");
            }
            s["environment"].as_hash().unwrap().iter().map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string())).collect()
        })
        .collect();
    let env = |n: &NodePlan| -> Vec<(String, String)> {
        let at = |port: u16| format!("127.0.0.1:{port}");
        nodes[n.i]
            .iter()
            .map(|(k, v)| {
                let mut v = interpolate(v, &[("CITYSENSE_NATS_ROUTE_PASSWORD", n.route_password)])
                    .replace("0.0.0.0:4222", &at(n.client))
                    .replace("127.0.0.1:8222", &at(n.monitor))
                    .replace("0.0.0.0:1883", &at(n.mqtt))
                    .replace("0.0.0.0:6222", &at(n.routes[n.i]));
                for (j, port) in n.routes.iter().enumerate() {
                    v = v.replace(&format!("@nats-{}:6222", j + 1), &format!("@{}", at(*port)));
                }
                if v == "/data" {
                    v = n.data.display().to_string();
                }
                assert!(!v.contains("0.0.0.0") && !v.contains("@nats-") && !v.contains(":8222"), "{k}={v}: an address of compose.yaml left to move to loopback");
                (k.clone(), v)
            })
            .collect()
    };
    let nats = NatsCluster::start_with(dir.path(), &deploy, 3, &USERS, &env).unwrap_or_else(|e| panic!("{e:#}"));

    // The collectors: compose mounts these paths and gives each its host name.
    let tls = dir.path().join("tls");
    let made = std::process::Command::new("bash").arg(deploy.join("make-test-ca.sh")).arg(&tls).arg("collector.city.example").output().unwrap();
    assert!(made.status.success(), "make-test-ca.sh: {}", String::from_utf8_lossy(&made.stderr));
    let password = dir.path().join("collector.mqtt-password");
    std::fs::write(&password, "collector-secret\n").unwrap();
    let shipped = std::fs::read_to_string(deploy.join("nats/collector.toml")).unwrap();
    let mut collectors = Vec::new();
    for n in 1..=3 {
        let s = &services[format!("collector-{n}").as_str()];
        let host = s["hostname"].as_str().unwrap();
        let volumes = strings(&s["volumes"]);
        for mount in ["./collector.toml:/etc/citysense/collector.toml:ro", "./collector.mqtt-password:/etc/citysense/mqtt-password:ro", "../tls:/etc/citysense/tls:ro"] {
            assert!(volumes.iter().any(|v| v == mount), "collector-{n} does not mount {mount}: {volumes:?}");
        }
        let mut text = shipped
            .replace("/etc/citysense/mqtt-password", &password.display().to_string())
            .replace("/etc/citysense/tls/", &format!("{}/", tls.display()))
            .replace("0.0.0.0:8080", "127.0.0.1:0")
            .replace("/var/lib/citysense/collector", &dir.path().join(host).display().to_string());
        for j in 0..3 {
            text = text.replace(&format!("mqtt://nats-{}:1883", j + 1), &nats.mqtt_url(j)).replace(&format!("nats://nats-{}:4222", j + 1), &nats.nats_url(j));
        }
        assert!(!text.contains("/etc/citysense") && !text.contains("nats-") && !text.contains("/var/lib"), "deploy/nats/collector.toml has a path or host left to adapt:\n{text}");
        let mut cfg: collector::config::CollectorConfig = shared::config::parse("deploy/nats/collector.toml", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
        let cluster = cfg.cluster.as_mut().expect("collector.toml is in cluster mode");
        assert_eq!(cluster.name, None, "collector.toml names the collector: the same file on three hosts would give three collectors one name");
        // What the host name gives a collector in its container.
        cluster.name = Some(host.to_string());
        collectors.push(collector::Collector::start(cfg).await.unwrap_or_else(|e| panic!("collector-{n}: {e}")));
    }

    const BATCHES: u64 = 5;
    let who = Identity { login: Some(("gw-cluster".into(), "gw-cluster-secret".into())), ..Default::default() };
    let mut gw = FakeGateway::connect_as(&nats.mqtt_url(1), "gw-cluster", who).await.unwrap();
    for n in 0..BATCHES {
        let reading =
            shared::Reading { seq: shared::Seq(0), sensor: "wl-001".into(), metric: "water_level_m".into(), ts_ms: now_ms(), value: n as f64, quality: shared::Quality::Good };
        gw.send_until_acked(vec![reading], LIMIT).await;
    }
    for (n, c) in collectors.iter().enumerate() {
        wait_for(
            &format!("collector-{} to store every batch", n + 1),
            LIMIT,
            || async move { (c.counters.stored.load(std::sync::atomic::Ordering::Relaxed) == BATCHES).then_some(()) },
        )
        .await;
    }
    for c in collectors {
        c.shutdown().await;
    }
}

/// A test CA and a certificate it signed for 127.0.0.1 (server use): PEM
/// (CA, certificate, key).
fn loopback_pki() -> (String, String, String) {
    let (ca, issuer) = common::pki::authority("citysense test CA");
    let (cert, key) = common::pki::leaf(&issuer, "127.0.0.1", rcgen::ExtendedKeyUsagePurpose::ServerAuth, false);
    (ca, cert, key)
}

/// The cluster with TLS on its MQTT listeners (deploy/nats/node-tls.conf as
/// shipped): a collector listing the nodes as mqtts:// with the CA
/// (`mqtt.ca_file`) and a gateway over mqtts get a batch stored and
/// acknowledged through it; plain MQTT to those ports gets nowhere, and
/// neither does TLS from a client that does not trust the node's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_mqtt_listeners_speak_tls_with_node_tls_conf() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, cert, key) = loopback_pki();
    let file = |name: &str, pem: &str| {
        std::fs::write(d.join(name), pem).unwrap();
        d.join(name)
    };
    let (ca_file, cert_file, key_file) = (file("ca.pem", &ca), file("node.pem", &cert), file("node.key", &key));
    let nats = NatsCluster::start_tls(&d.join("nats"), &workspace().join("deploy"), 3, &USERS, &cert_file, &key_file).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(nats.mqtt_url(0).starts_with("mqtts://"));
    let text = collector_text(d, "collector", &nats.mqtt_list(&[0, 1, 2]), "", "").replace("[mqtt]\n", &format!("[mqtt]\nca_file = \"{}\"\n", ca_file.display()));
    let cfg: collector::config::CollectorConfig = shared::config::parse("collector over mqtts", &text, d).unwrap_or_else(|e| panic!("{e}"));
    let c = collector::Collector::start(cfg).await.expect("collector starts");

    let login = Some(("gw-other".to_string(), "gw-other-secret".to_string()));
    let plain = FakeGateway::connect_as(&nats.mqtt_url(1).replace("mqtts://", "mqtt://"), "gw-other", Identity { login: login.clone(), ..Default::default() }).await;
    assert!(plain.is_err(), "plain MQTT admitted on a TLS listener");
    let (other_ca, _, _) = loopback_pki();
    let untrusted = Identity { login: login.clone(), tls: Some(rumqttc::Transport::tls(other_ca.into_bytes(), None, None)), ..Default::default() };
    assert!(FakeGateway::connect_as(&nats.mqtt_url(1), "gw-other", untrusted).await.is_err(), "a node certificate from a CA the client does not trust was accepted");

    let who = Identity { login, tls: Some(rumqttc::Transport::tls(ca.into_bytes(), None, None)), ..Default::default() };
    let mut gw = FakeGateway::connect_as(&nats.mqtt_url(1), "gw-other", who).await.unwrap();
    let reading = shared::Reading { seq: shared::Seq(0), sensor: "wl-tls".into(), metric: "water_level_m".into(), ts_ms: now_ms(), value: 3.25, quality: shared::Quality::Good };
    let seq = gw.send(vec![reading]).await;
    gw.wait_acked(seq, LIMIT).await;
    assert_eq!(c.store.last("wl-tls", "water_level_m").unwrap().map(|s| s.value), Some(3.25));
    c.shutdown().await;
}

/// The partitions of the batch log a collector holds, from its `/metrics`;
/// `None` while it is not listening yet.
async fn held_yet(http: SocketAddr) -> Option<Vec<u32>> {
    let (_, body) = try_get(http, "/metrics").await.ok()?;
    Some(partitions_held(&body))
}

async fn held(http: SocketAddr) -> Vec<u32> {
    held_yet(http).await.expect("the collector answers /metrics")
}

/// Waits until `a` and `b` hold every partition between them, 2 each.
async fn shared_evenly(a: SocketAddr, b: SocketAddr) -> (Vec<u32>, Vec<u32>) {
    wait_for("the two collectors to hold 2 partitions each", LIMIT, || async move {
        let (x, y) = (held_yet(a).await?, held_yet(b).await?);
        let mut all: Vec<u32> = x.iter().chain(&y).copied().collect();
        all.sort();
        (x.len() == 2 && y.len() == 2 && all == [0, 1, 2, 3]).then_some((x, y))
    })
    .await
}

/// Collectors sharing a batch log split into 4 partitions: each gateway's
/// batches are stored and judged by the one collector holding its partition
/// (where NATS's own `partition()` put them, and where the collector's
/// reckoning of it says), the other holds none of them; yet each serves the
/// whole city: its sensors, gateways, series, export and live stream. A
/// collector that joins is given half; one killed (SIGKILL) has its share
/// taken by the other within seconds of its leases expiring, and what its
/// gateways sent meanwhile is stored there, each reading once; restarted on
/// an empty disk it is given half again. An alert fires on its sensor's
/// holder only, and the alert feed carries it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_share_a_partitioned_log_and_a_dead_ones_share_moves() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    const GATEWAYS: [&str; 5] = ["gw-river", "gw-north", "gw-park", "gw-south", "gw-east"];
    let secrets: Vec<String> = GATEWAYS.iter().map(|g| format!("{g}-secret")).collect();
    let mut users: Vec<(&str, &str, &str)> = vec![USERS[0], USERS[3]];
    users.extend(GATEWAYS.iter().zip(&secrets).map(|(g, s)| ("gateway", *g, s.as_str())));
    let nats = NatsCluster::start(dir.path(), &workspace().join("deploy"), 3, &users).unwrap_or_else(|e| panic!("{e:#}"));
    let partitions = collector::cluster::partition::Partitions::new(4);
    let covered: std::collections::BTreeSet<u32> = GATEWAYS.iter().map(|g| partitions.of(g)).collect();
    assert_eq!(covered.len(), 4, "the gateways fall in every partition");
    let rule = "[[rule]]\nid = \"high\"\nkind = \"threshold\"\nmetric = \"level\"\nop = \">\"\nvalue = 100\nseverity = \"critical\"\n";
    let brokers = nats.mqtt_list(&[0, 1, 2]);
    let nats_list = nats.nats_list(&[0, 1, 2]);
    let shared_log = |name: &str| format!("[cluster]\nname = \"{name}\"\nnats = {nats_list}\npartitions = 4\n");
    let mut alerts = json_feed_as(&nats.mqtt_url(2), "duty-desk", Some(("duty-desk", "duty-desk-secret")), "citysense/v1/alerts/#", rumqttc::QoS::AtLeastOnce).await;

    // a alone, in a process of its own (to be killed): it holds everything.
    let (a, ha) = collector_process(dir.path(), "a", &brokers, rule, &shared_log("a"));
    wait_for("collector a to hold all 4 partitions", LIMIT, || async move { (held_yet(ha).await? == [0, 1, 2, 3]).then_some(()) }).await;
    // b joins: a lets go of half, b takes it.
    let b = collector_in(dir.path(), "b", &brokers, rule, &shared_log("b")).await;
    let hb = b.http_addr;
    let (on_a, _) = shared_evenly(ha, hb).await;
    // What one collector's own store holds of a gateway (a counts below 100).
    let own = |c: &collector::Collector, g: &str| -> Vec<f64> {
        c.store.query(&format!("{g}-level"), "level", 0, i64::MAX, 100_000).unwrap().into_iter().map(|s| s.value).filter(|v| *v < 100.0).collect()
    };
    let mut live_on_a = SseClient::connect(ha, "/api/v1/stream?types=reading").await;
    let mut alerts_on_b = SseClient::connect(hb, "/api/v1/stream?types=alert").await;

    let mut gws = Vec::new();
    for (g, s) in GATEWAYS.iter().zip(&secrets) {
        let who = Identity { login: Some((g.to_string(), s.clone())), ..Default::default() };
        gws.push(FakeGateway::connect_as(&nats.mqtt_url(0), g, who).await.unwrap());
    }
    let start = now_ms() - 60_000;
    let mut sent = 0;
    // Sends `n` readings of each gateway's sensor, one a batch, values counting on from `sent`.
    let send = |gws: &mut Vec<FakeGateway>, from: usize, n: usize| {
        let gws = std::mem::take(gws);
        async move {
            let mut gws = gws;
            for i in from..from + n {
                for gw in gws.iter_mut() {
                    let sensor = format!("{}-level", gw.id);
                    let r = shared::Reading {
                        seq: shared::Seq(0),
                        sensor: sensor.as_str().into(),
                        metric: "level".into(),
                        ts_ms: start + i as i64 * 100,
                        value: i as f64,
                        quality: shared::Quality::Good,
                    };
                    let seq = gw.send(vec![r]).await;
                    gw.wait_acked(seq, LIMIT).await;
                }
            }
            gws
        }
    };
    gws = send(&mut gws, sent, 5).await;
    sent += 5;
    let holder = |held_a: &[u32], gw: &str| held_a.contains(&partitions.of(gw));
    let values = |from: usize, to: usize| (from..to).map(|i| i as f64).collect::<Vec<_>>();
    for g in GATEWAYS {
        let expected = if holder(&on_a, g) { vec![] } else { values(0, sent) };
        assert_eq!(own(&b, g), expected, "{g} (partition {}) in b's store: stored by its holder only", partitions.of(g));
    }
    let stored = |http: SocketAddr| async move { metric(http, "citysense_readings_stored_total").await as usize };
    assert_eq!(stored(ha).await + stored(hb).await, sent * GATEWAYS.len(), "every reading stored by one collector");
    // The city view on both: every gateway's series, sensor, gateway and export row.
    for http in [ha, hb] {
        for g in GATEWAYS {
            assert_eq!(series_values(http, &format!("{g}-level"), "level").await, values(0, sent), "{g}'s series through {http}");
        }
        let latest = || async move {
            let sensors = get_json(http, "/api/v1/sensors").await;
            let mut v: Vec<(String, f64)> =
                sensors.as_array().unwrap().iter().map(|s| (s["id"].as_str().unwrap().to_string(), s["metrics"][0]["value"].as_f64().unwrap_or(-1.0))).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        let mut whole: Vec<(String, f64)> = GATEWAYS.iter().map(|g| (format!("{g}-level"), (sent - 1) as f64)).collect();
        whole.sort_by(|x, y| x.0.cmp(&y.0));
        wait_for("every sensor with its latest value", LIMIT, || async { (latest().await == whole).then_some(()) }).await;
        let gateways = get_json(http, "/api/v1/gateways").await;
        let mut received: Vec<(String, u64)> =
            gateways.as_array().unwrap().iter().map(|g| (g["id"].as_str().unwrap().to_string(), g["readings_received"].as_u64().unwrap())).collect();
        received.sort();
        let mut expected: Vec<(String, u64)> = GATEWAYS.iter().map(|g| (g.to_string(), sent as u64)).collect();
        expected.sort();
        assert_eq!(received, expected, "every gateway with what it delivered, through {http}");
        let (status, csv) = try_get(http, &format!("/api/v1/export?from={start}")).await.unwrap();
        assert_eq!((status, csv.lines().count()), (200, 1 + sent * GATEWAYS.len()), "the city's export through {http}: {csv}");
    }
    // a's live stream carries b's gateways' readings too.
    let b_gw = *GATEWAYS.iter().find(|g| !holder(&on_a, g)).unwrap();
    let heard = live_on_a.next_where("reading", LIMIT, |r| r["sensor"] == format!("{b_gw}-level")).await;
    assert_eq!(heard["metric"], "level");
    // A sensor belongs to the first gateway heard carrying it, city-wide: a
    // gateway b judges is refused the sensor of one a judges.
    let a_gw = *GATEWAYS.iter().find(|g| holder(&on_a, g)).unwrap();
    let i = gws.iter().position(|g| g.id == b_gw).unwrap();
    let fake = shared::Reading {
        seq: shared::Seq(0),
        sensor: format!("{a_gw}-level").as_str().into(),
        metric: "level".into(),
        ts_ms: start + 50,
        value: 99.5,
        quality: shared::Quality::Good,
    };
    let seq = gws[i].send(vec![fake]).await;
    gws[i].wait_acked(seq, LIMIT).await;
    let refused = get_json(hb, "/api/v1/gateways").await.as_array().unwrap().iter().find(|g| g["id"] == b_gw).unwrap()["refused_readings"].as_u64();
    assert_eq!(refused, Some(1), "{b_gw} sent a reading of {a_gw}'s sensor to b");
    assert!(!series_values(hb, &format!("{a_gw}-level"), "level").await.contains(&99.5), "stored for a gateway that does not own the sensor");

    // A crossing fires on its sensor's holder only: a gateway of a's, so
    // the alert is open when a dies.
    let hot_gw = *GATEWAYS.iter().find(|g| holder(&on_a, g)).unwrap();
    let hot_sensor = format!("{hot_gw}-level");
    let reading =
        |value: f64, ts_ms: i64| shared::Reading { seq: shared::Seq(0), sensor: hot_sensor.as_str().into(), metric: "level".into(), ts_ms, value, quality: shared::Quality::Good };
    let at = |gws: &mut Vec<FakeGateway>| gws.iter().position(|g| g.id == hot_gw).unwrap();
    let i = at(&mut gws);
    let seq = gws[i].send(vec![reading(150.0, start + 450)]).await;
    gws[i].wait_acked(seq, LIMIT).await;
    let alerts_of = |http: SocketAddr| {
        let path = format!("/api/v1/alerts?sensor={hot_sensor}");
        async move { get_json(http, &path).await.as_array().unwrap().clone() }
    };
    let fired_on_a = wait_for("the alert on its holder", LIMIT, || async { alerts_of(ha).await.into_iter().find(|a| a["state"] == "firing") }).await;
    // b lists it too (the city's open alerts), under the same id, and takes
    // its acknowledgement, which a applies and announces.
    let listed = wait_for("the other collector to list the alert", LIMIT, || async { alerts_of(hb).await.into_iter().find(|a| a["id"] == fired_on_a["id"]) }).await;
    assert_eq!(listed["state"], "firing");
    assert_eq!(alerts_of(hb).await.len(), 1, "b judges none of a's gateways: it fired none of its own");
    let (status, body) = post(hb, &format!("/api/v1/alerts/{}/ack", fired_on_a["id"]), r#"{"by":"duty officer Li"}"#).await;
    assert_eq!(status, 200, "acknowledged on a collector that does not hold it: {body}");
    let acked_on_a = wait_for("its holder to apply the acknowledgement", LIMIT, || async { alerts_of(ha).await.into_iter().find(|a| a["state"] == "acknowledged") }).await;
    // b's live stream told of both changes a made.
    for event in ["fired", "acknowledged"] {
        alerts_on_b.next_where("alert", LIMIT, |a| a["id"] == fired_on_a["id"] && a["event"] == event).await;
    }
    assert_eq!((&acked_on_a["id"], &acked_on_a["acked_by"]), (&fired_on_a["id"], &serde_json::json!("duty officer Li")));
    wait_for("b to list it acknowledged", LIMIT, || async { alerts_of(hb).await.into_iter().find(|a| a["state"] == "acknowledged").map(|_| ()) }).await;

    // a is killed with nothing in hand; every gateway goes on sending, a's
    // first (their batches wait in the log until b takes a's partitions).
    let killed = Instant::now();
    drop(a);
    // Over the limit again: b, given the partition, goes on with a's alert
    // rather than firing its own.
    let i = at(&mut gws);
    let seq = gws[i].send(vec![reading(160.0, start + 460)]).await;
    gws[i].wait_acked(seq, LIMIT).await;
    let delivering_again = killed.elapsed();
    let on_b = alerts_of(hb).await;
    assert_eq!(on_b.len(), 1, "a's open alert taken over, not a second one fired: {on_b:?}");
    let same = |a: &serde_json::Value| (a["id"].clone(), a["state"].clone(), a["started_ts_ms"].clone(), a["reading_ts_ms"].clone(), a["acked_by"].clone());
    assert_eq!(same(&on_b[0]), same(&acked_on_a), "taken over as it was, under its id");
    gws.sort_by_key(|g| !holder(&on_a, &g.id));
    gws = send(&mut gws, sent, 1).await;
    let all_delivering = killed.elapsed();
    sent += 1;
    // Under it: b resolves the alert it took over.
    wait_for("b to resolve the alert it took over", LIMIT, || async { alerts_of(hb).await.into_iter().find(|a| a["state"] == "resolved") }).await;
    wait_for("b to hold all 4 partitions", LIMIT, || async move { (held(hb).await == [0, 1, 2, 3]).then_some(()) }).await;
    gws = send(&mut gws, sent, 4).await;
    let before_kill = 5;
    sent += 4;
    let level = |http: SocketAddr, g: &'static str| async move { series_values(http, &format!("{g}-level"), "level").await.into_iter().filter(|v| *v < 100.0).collect::<Vec<_>>() };
    assert!(series_values(hb, &hot_sensor, "level").await.contains(&160.0));
    for g in GATEWAYS {
        let expected = if holder(&on_a, g) { values(before_kill, sent) } else { values(0, sent) };
        assert_eq!(own(&b, g), expected, "{g} (partition {}) on b after a died: what a stored is on a's disk, the rest once on b", partitions.of(g));
        assert_eq!(level(hb, g).await, expected, "{g}'s series through b: a's share of the history is gone with a");
    }

    // a comes back on an empty disk: it is given half again, and stores
    // only what arrives for its new share from now on.
    let c = collector_in(dir.path(), "a-emptied", &brokers, rule, &shared_log("a")).await;
    let hc = c.http_addr;
    let (on_c, _) = shared_evenly(hc, hb).await;
    let on_b_before: Vec<Vec<f64>> = GATEWAYS.iter().map(|g| own(&b, g)).collect();
    // It serves the whole city before any gateway sends again: every sensor
    // with its last value, learned from what b has seen.
    let last = (sent - 1) as f64;
    let mut every: Vec<(String, f64)> = GATEWAYS.iter().map(|g| (format!("{g}-level"), last)).collect();
    every.sort_by(|x, y| x.0.cmp(&y.0));
    let every = &every;
    wait_for("the rejoined collector to list every sensor with its last value", LIMIT, || async move {
        let sensors = get_json(hc, "/api/v1/sensors").await;
        let mut seen: Vec<(String, f64)> = sensors
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| Some((s["id"].as_str()?.to_string(), s["metrics"].as_array()?.iter().find(|m| m["metric"] == "level")?["value"].as_f64()?)))
            .collect();
        seen.sort_by(|x, y| x.0.cmp(&y.0));
        (seen == *every).then_some(())
    })
    .await;
    gws = send(&mut gws, sent, 3).await;
    for (g, had) in GATEWAYS.iter().zip(on_b_before) {
        let (on_c_now, on_b_now) = (own(&c, g), own(&b, g));
        let mut city = had.clone();
        city.extend(values(sent, sent + 3));
        assert_eq!((level(hb, g).await, level(hc, g).await), (city.clone(), city), "{g}'s series through both, from both stores");
        if holder(&on_c, g) {
            assert_eq!(
                (on_c_now, on_b_now),
                (values(sent, sent + 3), had),
                "{g} (partition {}) after the rebalance: the new readings on the rejoined collector only",
                partitions.of(g)
            );
        } else {
            let mut expected = had;
            expected.extend(values(sent, sent + 3));
            assert_eq!((on_c_now, on_b_now), (vec![], expected), "{g} (partition {}) after the rebalance: still on b only", partitions.of(g));
        }
    }

    // One crossing, judged by two collectors: fired and acknowledged once (by a), resolved once (by b).
    let mut heard = Vec::new();
    while let Ok(Some((_, ev))) = tokio::time::timeout(Duration::from_secs(2), alerts.recv()).await {
        heard.push((ev["sensor"].as_str().unwrap_or_default().to_string(), ev["event"].as_str().unwrap_or_default().to_string()));
    }
    let on_feed: Vec<&str> = heard.iter().filter(|(s, _)| *s == hot_sensor).map(|(_, e)| e.as_str()).collect();
    assert_eq!(on_feed, ["fired", "acknowledged", "resolved"], "one crossing, one alert on the feed: {heard:?}");
    eprintln!("a killed (SIGKILL): a batch of one of its gateways acknowledged after {delivering_again:?}, one of every gateway after {all_delivering:?}");
    drop(gws);
    b.shutdown().await;
    c.shutdown().await;
}

/// A collector told to read the log split otherwise than it is (another
/// `cluster.partitions` than the collector that made it, or none) reads none
/// of it, and `/healthz` says why, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_split_otherwise_than_the_log_reads_none_of_it_and_says_why() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nats = cluster(dir.path());
    let (brokers, nats_list) = (nats.mqtt_list(&[0, 1, 2]), nats.nats_list(&[0, 1, 2]));
    let split = |name: &str, n: u32| format!("[cluster]\nname = \"{name}\"\nnats = {nats_list}\npartitions = {n}\n");
    let first = collector_in(dir.path(), "first", &brokers, "", &split("first", 4)).await;
    let hf = first.http_addr;
    wait_for("the first collector to hold the 4 partitions it made", LIMIT, || async move { (held(hf).await.len() == 4).then_some(()) }).await;
    for (name, n) in [("six", 6), ("whole", 0)] {
        let c = collector_in(dir.path(), name, &brokers, "", &split(name, n)).await;
        let h = c.http_addr;
        let why = wait_for(&format!("{name} to say why it reads nothing"), LIMIT, || async move {
            let (status, body) = get(h, "/healthz").await;
            (status == 503).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap()["failing"].to_string()).filter(|f| f.contains("batch_log"))
        })
        .await;
        assert!(why.contains("split into 4 partitions") && why.contains(&format!("cluster.partitions is {n}")), "{why}");
        assert!(held(h).await.is_empty());
        c.shutdown().await;
    }
    assert_eq!(held(hf).await.len(), 4, "the one configured as the log is split keeps reading it");
    first.shutdown().await;
}

/// What the surviving collector showed while the drill ran: every poll of
/// its sensors and gateways, and the polls where a series could not be read.
#[derive(Debug, Default)]
struct Watched {
    polls: usize,
    incomplete: Vec<String>,
    series_unreadable: Vec<Duration>,
}

/// Polls `http` every 200 ms until `stop`: the sensors `ids` each with a
/// value, the gateways `gws` each listed, and every sensor's series readable.
async fn watch_city(http: SocketAddr, ids: Vec<String>, gws: Vec<String>, started: Instant, mut stop: tokio::sync::watch::Receiver<bool>) -> Watched {
    let mut seen = Watched::default();
    loop {
        seen.polls += 1;
        let sensors = try_get(http, "/api/v1/sensors").await.ok().and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok()).unwrap_or_default();
        let gateways = try_get(http, "/api/v1/gateways").await.ok().and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok()).unwrap_or_default();
        let listed = |v: &serde_json::Value, id: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x["id"] == id && x["last_seen_ms"].is_number()));
        for id in &ids {
            if !listed(&sensors, id) {
                seen.incomplete.push(format!("sensor {id} at {:?}", started.elapsed()));
            }
        }
        for g in &gws {
            if !listed(&gateways, g) {
                seen.incomplete.push(format!("gateway {g} at {:?}", started.elapsed()));
            }
        }
        for id in &ids {
            if series_values_yet(http, id, "counter").await.is_none() {
                seen.series_unreadable.push(started.elapsed());
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return seen,
        }
    }
}

/// The drill the cluster is for, with collectors sharing the log: three
/// nodes, two collectors (one a process of its own), three agents polling
/// the simulator. A node dies and comes back; then a collector dies
/// (SIGKILL) and comes back on its own disk. Throughout, the other
/// collector lists every sensor and gateway of the city; in the end every
/// reading the devices gave is stored and heard on the live feed, once
/// (but for what the killed collector had stored in the instant before its
/// progress reached the cluster: stored by both, read within the second
/// before the kill), and the one threshold crossing made one alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_city_rides_out_a_node_and_a_collector_dying_and_coming_back() {
    let _turn = TURNS.acquire().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    const GATEWAYS: [&str; 3] = ["gw-river", "gw-north", "gw-park"];
    let secrets: Vec<String> = GATEWAYS.iter().map(|g| format!("{g}-secret")).collect();
    let mut users: Vec<(&str, &str, &str)> = vec![USERS[0], USERS[3]];
    users.extend(GATEWAYS.iter().zip(&secrets).map(|(g, s)| ("gateway", *g, s.as_str())));
    let mut nats = NatsCluster::start(dir.path(), &workspace().join("deploy"), 3, &users).unwrap_or_else(|e| panic!("{e:#}"));
    let partitions = collector::cluster::partition::Partitions::new(4);
    let plan = City { air: 3, traffic: 0, water: 0, noise: 0 };
    let rule = "[[rule]]\nid = \"smog\"\nkind = \"threshold\"\nmetric = \"pm25\"\nop = \">\"\nvalue = 500\nseverity = \"critical\"\n";
    let catalogue = format!("{}{rule}", sim::run::catalogue_toml(&plan.sensors()));
    let brokers = nats.mqtt_list(&[0, 1, 2]);
    let nats_list = nats.nats_list(&[0, 1, 2]);
    let shared_log = |name: &str| format!("[cluster]\nname = \"{name}\"\nnats = {nats_list}\npartitions = 4\n");
    let desk = Some(("duty-desk", "duty-desk-secret"));
    let mut live = json_feed_as(&nats.mqtt_url(2), "duty-live", desk, "citysense/v1/live/#", rumqttc::QoS::AtMostOnce).await;
    let mut alerts = json_feed_as(&nats.mqtt_url(2), "duty-alerts", desk, "citysense/v1/alerts/#", rumqttc::QoS::AtLeastOnce).await;

    let (mut a, ha) = collector_process(dir.path(), "a", &brokers, &catalogue, &shared_log("a"));
    wait_for("collector a to hold all 4 partitions", LIMIT, || async move { (held_yet(ha).await? == [0, 1, 2, 3]).then_some(()) }).await;
    let b = collector_in(dir.path(), "b", &brokers, &catalogue, &shared_log("b")).await;
    let hb = b.http_addr;
    let (on_a, _) = shared_evenly(ha, hb).await;
    let on_a_now = |g: &str| on_a.contains(&partitions.of(g));

    let city = RunningCity::start(plan, None, Duration::from_millis(200)).await.unwrap();
    let ids: Vec<String> = city.devices.iter().map(|d| d.device.spec.id.clone()).collect();
    let mut agents = Vec::new();
    for (i, (g, secret)) in GATEWAYS.iter().zip(&secrets).enumerate() {
        let pw = dir.path().join(format!("{g}-password"));
        std::fs::write(&pw, format!("{secret}\n")).unwrap();
        let order = [[1, 2, 0], [2, 0, 1], [0, 1, 2]][i];
        let text = agent_toml(dir.path(), g, &nats.mqtt_list(&order), &sim::run::modbus_toml(&[&city.devices[i]], Duration::from_millis(100)), None)
            .replace("[uplink]\n", &format!("[uplink]\nusername = \"{g}\"\npassword_file = \"{}\"\n", pw.display()));
        let cfg = shared::config::parse("cluster agent", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
        agents.push(agent::Agent::start(cfg).await.unwrap());
    }
    let grows = |i: usize, from: usize, n: usize| counter_grows(hb, &agents[i], &ids[i], from, n);
    let mut counted = Vec::new();
    for i in 0..3 {
        counted.push(grows(i, 0, 10).await.len());
    }
    let started = Instant::now();
    let (stop_watching, stop) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_city(hb, ids.clone(), GATEWAYS.iter().map(|g| g.to_string()).collect(), started, stop));

    // A crossing on a sensor of a gateway a holds: still over the limit when a dies.
    let hot = GATEWAYS.iter().position(|g| on_a_now(g)).expect("a holds a gateway");
    city.control.force(&ids[hot], "pm25", 900.0);
    let alerts_of = |http: SocketAddr| {
        let path = format!("/api/v1/alerts?sensor={}", ids[hot]);
        async move { get_json(http, &path).await.as_array().unwrap().clone() }
    };
    let fired = wait_for("the alert, listed by b", LIMIT, || async { alerts_of(hb).await.into_iter().find(|a| a["state"] == "firing") }).await;

    // A node dies and comes back.
    nats.kill(1);
    for (i, n) in counted.iter_mut().enumerate() {
        *n = grows(i, *n, 5).await.len();
    }
    nats.restart(1).unwrap();
    for (i, n) in counted.iter_mut().enumerate() {
        *n = grows(i, *n, 5).await.len();
    }

    // A collector dies: its gateways deliver again through b. While it is
    // down its share of the history is not readable, so delivery is told
    // from the agents: acknowledged means stored by b.
    let acked = |i: usize| agents[i].outbox.stats().acked;
    let at_kill: Vec<u64> = (0..3).map(acked).collect();
    let (killed, killed_ms) = (Instant::now(), now_ms());
    drop(a);
    let again_after = |i: usize, more: u64| {
        let from = at_kill[i];
        async move {
            wait_for(&format!("{} to deliver again", GATEWAYS[i]), LIMIT, || async move { (acked(i) > from + more).then_some(()) }).await;
            (GATEWAYS[i], if on_a_now(GATEWAYS[i]) { "a's" } else { "b's" }, killed.elapsed())
        }
    };
    // 30 seqs: five polls' readings, more than one batch in flight at the kill.
    let again = tokio::join!(again_after(0, 30), again_after(1, 30), again_after(2, 30));
    wait_for("b to hold all 4 partitions", LIMIT, || async move { (held(hb).await == [0, 1, 2, 3]).then_some(()) }).await;
    tokio::join!(again_after(0, 300), again_after(1, 300), again_after(2, 300));
    let open = alerts_of(hb).await;
    assert_eq!((open.len(), &open[0]["id"], &open[0]["state"]), (1, &fired["id"], &serde_json::json!("firing")), "a's open alert goes on under b: {open:?}");

    // It comes back on its own disk and is given half again, and lists the
    // alert b went on with, whichever of them holds it now.
    let (back, ha) = collector_process(dir.path(), "a", &brokers, &catalogue, &shared_log("a"));
    a = back;
    shared_evenly(ha, hb).await;
    wait_for("a to list the open alert", LIMIT, || async { alerts_of(ha).await.into_iter().find(|a| a["id"] == fired["id"] && a["state"] == "firing") }).await;
    city.control.clear(&ids[hot], "pm25");
    let fired_id = fired["id"].clone();
    let closed = |list: Vec<serde_json::Value>| list.iter().all(|a| a["id"] != fired_id || a["state"] == "resolved");
    wait_for("the alert resolved", LIMIT, || async { (closed(alerts_of(ha).await) && closed(alerts_of(hb).await)).then_some(()) }).await;
    for (i, n) in counted.iter_mut().enumerate() {
        *n = grows(i, *n, 5).await.len();
    }
    let _ = stop_watching.send(true);
    let watched = watcher.await.unwrap();
    let failed: Vec<u64> = (0..3).map(|i| agents[i].devices[0].snapshot().errors).collect();
    for agent in agents.drain(..) {
        agent.shutdown().await;
    }
    // a stops (its partitions handed back to b), so its store can be read here.
    std::process::Command::new("kill").args(["-TERM", &a.0.id().to_string()]).status().unwrap();
    assert!(a.0.wait().unwrap().success(), "a stops cleanly");
    // What it had not settled b reads and stores: once b holds everything
    // and the live feed has been quiet for a second, all is stored.
    wait_for("b to hold all 4 partitions", LIMIT, || async move { (held(hb).await == [0, 1, 2, 3]).then_some(()) }).await;
    let mut heard = std::collections::HashMap::new();
    while let Ok(Some((topic, v))) = tokio::time::timeout(Duration::from_secs(1), live.recv()).await {
        *heard.entry((topic, v["ts_ms"].as_i64().unwrap_or_default())).or_insert(0) += 1;
    }
    let stored_by_b = |b: &collector::Collector| {
        b.store
            .series()
            .into_iter()
            .filter(|(s, _)| ids.iter().any(|id| id == s.as_str()))
            .map(|(s, m)| b.store.query(&s, &m, 0, i64::MAX, usize::MAX).unwrap().len())
            .sum::<usize>()
    };
    let b_ref = &b;
    wait_for("b to have stored each reading it took once", LIMIT, || async move {
        (b_ref.counters.stored.load(std::sync::atomic::Ordering::Relaxed) as usize == stored_by_b(b_ref)).then_some(())
    })
    .await;
    let store_a = collector::store::RedbStore::open(&dir.path().join("a")).unwrap();
    use collector::store::Store as _;
    let mut stored_on = [0usize; 2];
    // Stored by both: only what a had stored in the instant between its
    // store's sync and its progress reaching the cluster when it was killed
    // (deploy/README.md, "A collector dies"): read by its devices within
    // the second before the kill.
    let mut by_both = 0;
    for (i, id) in ids.iter().enumerate() {
        for (s, m) in store_a.series().into_iter().chain(b.store.series()).filter(|(s, _)| s.as_str() == id).collect::<std::collections::BTreeSet<_>>() {
            let on_a: Vec<i64> = store_a.query(&s, &m, 0, i64::MAX, usize::MAX).unwrap().iter().map(|x| x.ts_ms).collect();
            let on_b: Vec<i64> = b.store.query(&s, &m, 0, i64::MAX, usize::MAX).unwrap().iter().map(|x| x.ts_ms).collect();
            let twice: Vec<i64> = on_a.iter().filter(|t| on_b.binary_search(t).is_ok()).map(|t| t - killed_ms).collect();
            assert!(twice.iter().all(|t| (-1_000..=0).contains(t)), "{s}/{m}: readings stored by both collectors, read at these ms from the kill: {twice:?}");
            by_both += twice.len();
            stored_on[0] += on_a.len();
            stored_on[1] += on_b.len();
        }
        let mut counter: Vec<f64> = store_a
            .query(id, "counter", 0, i64::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .chain(b.store.query(id, "counter", 0, i64::MAX, usize::MAX).unwrap())
            .map(|x| x.value)
            .collect();
        counter.sort_by(f64::total_cmp);
        assert!(counter.windows(2).all(|w| w[1] > w[0]), "{id}'s counter stored twice or going back");
        let missing = counter.last().unwrap() - counter.first().unwrap() + 1.0 - counter.len() as f64;
        assert!(missing <= (failed[i] * 2) as f64, "{id}: {missing} counter values missing, {} failed reads", failed[i]);
    }

    // The live feed: none heard that is not stored, and none twice but what
    // both collectors stored.
    let twice: Vec<i64> = heard.iter().filter(|(_, n)| **n > 1).map(|((_, ts), _)| ts - killed_ms).collect();
    assert!(twice.iter().all(|t| (-1_000..=0).contains(t)), "readings heard more than once on the live feed (read at these ms from the kill), of {} heard: {twice:?}", heard.len());
    assert!(twice.len() <= by_both, "heard twice: {} readings, more than the {by_both} stored by both", twice.len());
    let unstored: Vec<&(String, i64)> = heard
        .keys()
        .filter(|(topic, ts)| {
            let (s, m) = topic.rsplit_once('/').map(|(rest, m)| (rest.rsplit('/').next().unwrap_or_default(), m)).unwrap_or_default();
            store_a.query(s, m, *ts, *ts, 1).unwrap().is_empty() && b.store.query(s, m, *ts, *ts, 1).unwrap().is_empty()
        })
        .collect();
    assert!(unstored.is_empty(), "{} readings heard on the live feed are in neither store, e.g. {:?}", unstored.len(), unstored.first());
    // One crossing, one alert.
    let mut events = Vec::new();
    while let Ok(Some((_, ev))) = tokio::time::timeout(Duration::from_secs(1), alerts.recv()).await {
        if ev["sensor"] == ids[hot].as_str() {
            events.push(ev["event"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(events, ["fired", "resolved"], "one crossing through a collector's death, one alert on the feed");
    assert!(watched.incomplete.is_empty(), "b did not list the whole city at every poll: {:?}", watched.incomplete);
    let unreadable = watched.series_unreadable.first().zip(watched.series_unreadable.last());
    eprintln!("drill: {by_both} readings stored by both collectors (read in the second before the kill)");
    eprintln!(
        "drill: {} polls of b, each listing every sensor and gateway; series unreadable in {} polls, {unreadable:?} after the drill began (a killed {:?} after it); delivering again after a's kill: {again:?}; stored on a {}, on b {}; {} readings heard on the live feed",
        watched.polls,
        watched.series_unreadable.len(),
        killed.duration_since(started),
        stored_on[0],
        stored_on[1],
        heard.len()
    );
    b.shutdown().await;
}
