//! The broker as a cluster: three NATS nodes (deploy/nats/node.conf as
//! shipped) with an MQTT listener each; a collector and an agent that list
//! every node. Killing the node an agent is on, then the collector's, costs a
//! reconnect each: every reading the devices gave is stored once, in order,
//! and delivery resumes within a bound the test prints.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use sim::{City, RunningCity};

const LIMIT: Duration = Duration::from_secs(60);

/// Waits until `sensor`'s counter series has `n` more values than `from`, and
/// checks the whole series: strictly increasing (a repeat would be a reading
/// stored twice) with every missing value a read the agent counts as failed.
async fn counter_grows(http: SocketAddr, agent: &agent::Agent, sensor: &str, from: usize, n: usize) -> Vec<f64> {
    let values = wait_for(&format!("{n} more counter values of {sensor} (had {from})"), LIMIT, || async move {
        let v = series_values(http, sensor, "counter").await;
        (v.len() >= from + n).then_some(v)
    })
    .await;
    assert!(values.windows(2).all(|w| w[1] > w[0]), "counter of {sensor} repeats or goes back: {values:?}");
    let missing = values.last().unwrap() - values.first().unwrap() + 1.0 - values.len() as f64;
    let failed = agent.devices.iter().find(|d| d.sensor == sensor).expect("device stats").snapshot().errors;
    assert!(missing <= (failed * 2) as f64, "counter of {sensor} misses {missing} values but the agent reports {failed} failed reads: {values:?}");
    values
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_agents_node_and_then_the_collectors_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(dir.path(), &workspace().join("deploy/nats/node.conf"), 3).unwrap_or_else(|e| panic!("{e:#}"));

    let plan = City { air: 1, traffic: 1, water: 0, noise: 0 };
    // The collector starts on node 1, the agent on node 2.
    let c = collector(dir.path(), Some(&nats.mqtt_list(&[0, 1, 2])), &sim::run::catalogue_toml(&plan.sensors())).await;
    let ids: Vec<String> = plan.sensors().iter().map(|s| s.id.to_string()).collect();
    let city = RunningCity::start(plan, None, Duration::from_millis(200)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let cfg = agent_config(dir.path(), "gw-cluster", &nats.mqtt_list(&[1, 2, 0]), &sim::run::modbus_toml(&devices, Duration::from_millis(100)), None);
    let agent = agent::Agent::start(cfg).await.unwrap();
    let node2 = nats.mqtt_url(1);
    connected_where(&agent, "to node 2, the first of its list", |b| b == node2).await;
    let before = counter_grows(c.http_addr, &agent, "aq-001", 0, 10).await.len();

    // The agent's node dies: it moves to another (node 3 next in its list,
    // or node 1 when node 3 refuses it while JetStream elects new leaders).
    let killed = Instant::now();
    nats.kill(1);
    let now_on = connected_where(&agent, "to another node", |b| b != node2).await;
    let moved = killed.elapsed();
    let after_agent_node = counter_grows(c.http_addr, &agent, "aq-001", before, 1).await.len();
    let first_stored = killed.elapsed();
    counter_grows(c.http_addr, &agent, "aq-001", after_agent_node, 10).await;

    // The collector's node dies (with node 2 still down: one node of three left
    // would have no JetStream majority, so node 2 comes back first).
    nats.restart(1).unwrap();
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
        "agent's node killed: on {now_on} after {moved:?}, first reading stored again after {first_stored:?}; collector's node killed: next reading stored after {collector_gap:?}"
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
