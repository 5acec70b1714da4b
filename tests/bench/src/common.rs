//! What the scenarios share: collectors on free ports, MQTT clients, scraping
//! `/metrics`, a process's CPU and memory.

use anyhow::Result;
use collector::config::CollectorConfig;

pub(crate) async fn collector_with(rules: &str) -> Result<(tempfile::TempDir, collector::Collector)> {
    collector_on("listen = \"127.0.0.1:0\"", rules).await
}

/// `mqtt`: the `[mqtt]` line saying which broker (`listen = …` or `external = …`).
pub(crate) async fn collector_on(mqtt: &str, rules: &str) -> Result<(tempfile::TempDir, collector::Collector)> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let text = format!(
        "[mqtt]\n{mqtt}\nmax_packet = \"16MiB\"\n# One bench gateway may send more than a real one is allowed to.\ngateway_rate = 10000000\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n{rules}",
        d.join("store").display()
    );
    let cfg: CollectorConfig = shared::config::parse("bench collector", &text, d).map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = collector::Collector::start(cfg).await?;
    Ok((dir, c))
}

/// `n` threshold rules, none of which the benchmark's values trip.
pub(crate) fn quiet_rules(n: usize) -> String {
    (0..n).map(|i| format!("[[rule]]\nid = \"r{i}\"\nkind = \"threshold\"\nmetric = \"m{}\"\nop = \">\"\nvalue = 1e9\nseverity = \"info\"\n", i % 10)).collect()
}

/// The `[mqtt]` line for `broker` (`embedded`, or `mosquitto`: Debian's
/// Mosquitto started on a free loopback port, as the tests start it, and
/// kept running while the returned guard lives).
pub(crate) fn broker_line(broker: &str) -> Result<(String, Option<(support::Mosquitto, tempfile::TempDir)>)> {
    match broker {
        "embedded" => Ok(("listen = \"127.0.0.1:0\"".to_string(), None)),
        "mosquitto" => {
            let dir = tempfile::tempdir()?;
            let m = support::Mosquitto::open(dir.path())?;
            Ok((format!("external = \"{}\"", m.url()), Some((m, dir))))
        }
        other => anyhow::bail!("broker `{other}` is not embedded or mosquitto"),
    }
}

pub(crate) fn mqtt_client(url: &str, id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let b = shared::url::BrokerUrl::parse(url).unwrap();
    let mut o = rumqttc::MqttOptions::new(id, b.host, b.port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    o.set_inflight(100);
    let (c, mut el) = rumqttc::AsyncClient::new(o, 256);
    el.network_options.set_tcp_nodelay(true);
    // A thousand gateways connecting and subscribing at once wait longer
    // than rumqttc's 5 s for the broker's CONNACK.
    el.network_options.set_connection_timeout(60);
    (c, el)
}

/// (CPU seconds used, resident and peak resident MB) of a process, from /proc.
pub(crate) fn proc_usage(pid: u32) -> Result<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, in clock ticks (100 per second on Linux).
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((ticks / 100.0, kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0))
}

/// Microseconds in which some runnable task waited for a CPU, machine-wide
/// (Linux's pressure stall information; 0 where the kernel has none): over
/// a run, how saturated the machine was, whoever used it.
pub(crate) fn cpu_stalled_us() -> u64 {
    std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("some "))?.split_whitespace().find_map(|f| f.strip_prefix("total="))?.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The agent's `/status` report.
pub(crate) async fn agent_status(port: u16) -> Result<serde_json::Value> {
    let (_, body) = support::try_get(([127, 0, 0, 1], port).into(), "/status").await?;
    Ok(serde_json::from_str(&body)?)
}

/// A counter or gauge from the collector's `/metrics`.
pub(crate) async fn scrape(http: std::net::SocketAddr, name: &str) -> Result<f64> {
    let (_, body) = support::try_get(http, "/metrics").await?;
    support::metric_in(&body, name).ok_or_else(|| anyhow::anyhow!("{name} not in /metrics"))
}

/// The release `citysense-collector` in its own process, next to this binary.
pub(crate) struct CollectorProcess {
    pub proc: support::Child,
    pub http: std::net::SocketAddr,
    pub mqtt_url: String,
}

/// Where a bench collector's broker is: its own, embedded, on a free port, or
/// one already running.
pub(crate) enum Broker<'a> {
    Embedded,
    External(&'a str),
}

/// `extra` is appended to the config's `[mqtt]` section.
pub(crate) fn collector_process(dir: &std::path::Path, tag: &str, broker: Broker, extra: &str) -> Result<CollectorProcess> {
    let bin = std::env::current_exe()?.with_file_name("citysense-collector");
    if !bin.exists() {
        anyhow::bail!("{} is missing: cargo build --release -p citysense-collector", bin.display());
    }
    let http = support::free_port();
    let (mqtt_line, mqtt_url) = match broker {
        Broker::Embedded => {
            let port = support::free_port();
            (format!("listen = \"127.0.0.1:{port}\""), format!("mqtt://127.0.0.1:{port}"))
        }
        Broker::External(url) => (format!("external = \"{url}\""), url.to_string()),
    };
    let cfg = dir.join(format!("collector-{tag}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\n{mqtt_line}\nmax_packet = \"16MiB\"\n{extra}\n[http]\nlisten = \"127.0.0.1:{http}\"\n[store]\npath = \"{}\"\n",
            dir.join(format!("store-{tag}")).display()
        ),
    )?;
    let proc = support::Child(run_quietly(std::process::Command::new(&bin), &cfg)?);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the collector did not listen on {http} within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(CollectorProcess { proc, http: ([127, 0, 0, 1], http).into(), mqtt_url })
}

/// `cmd` (a citysense binary, or one behind `taskset`) run with `run --config
/// cfg`, warnings only, its output discarded.
pub(crate) fn run_quietly(mut cmd: std::process::Command, cfg: &std::path::Path) -> std::io::Result<std::process::Child> {
    cmd.arg("run").arg("--config").arg(cfg).env("RUST_LOG", "warn").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()
}
