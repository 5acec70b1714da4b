//! `citysense-demo`: the collector, a simulated city and two agents
//! reading it over real Modbus TCP and MQTT on loopback, in one process.
//! Configs are generated as TOML text and go through the same parsing and
//! validation a technician's file does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::config::AgentConfig;
use agent::Agent;
use sim::{City, Kind, RunningCity};

use collector::config::CollectorConfig;
use collector::Collector;

pub struct DemoOptions {
    /// Extra collector settings layered on top of the demo's own.
    pub config: Option<PathBuf>,
    /// Where stores live; a temporary directory when absent.
    pub data: Option<PathBuf>,
    /// HTTP listen address; the demo's default is 127.0.0.1:8080.
    pub http: Option<String>,
    /// How often agents poll the simulated devices.
    pub poll: Duration,
    /// Where the simulator's anomaly control listens.
    pub control: std::net::SocketAddr,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { config: None, data: None, http: None, poll: Duration::from_secs(1), control: std::net::SocketAddr::from(([127, 0, 0, 1], 8090)) }
    }
}

/// The demo's rule set: what a city would start with. Natural simulated
/// values stay clear of every limit; forcing one past it raises the alert.
pub const DEMO_RULES: &str = r#"
[[rule]]
id = "pm25-high"
kind = "threshold"
metric = "pm25"
op = ">"
value = 75
clear = 60
severity = "warning"
select = { kind = "air_quality" }
escalate_after = "5m"

[[rule]]
id = "river-flood-warning"
kind = "threshold"
metric = "water_level_m"
op = ">"
value = 4.0
clear = 3.8
severity = "emergency"
select = { kind = "water_level" }
escalate_after = "2m"

[[rule]]
id = "noise-high"
kind = "threshold"
metric = "noise_laeq"
op = ">"
value = 75
clear = 70
for = "3s"
severity = "info"
select = { kind = "noise" }

[[rule]]
id = "traffic-counter-silent"
kind = "stale"
for = "15s"
severity = "warning"
select = { kind = "traffic" }

[[rule]]
id = "gateway-offline"
kind = "gateway_offline"
for = "30s"
severity = "critical"

[[rule]]
id = "gateway-clock"
kind = "clock_skew"
severity = "warning"
"#;

/// The demo's departments on duty and how their incidents are handled: the
/// catalogue's owners (`sim::Kind::owner`) map sensors to departments, and
/// everything escalates through the district emergency office to city
/// command. Deadlines are short so a visitor sees a reminder and an
/// escalation within minutes (README: Incidents).
pub const DEMO_DEPARTMENTS: &str = r#"
[incidents]
group_by = ["rule"]
group_window = "30m"
escalate_after = "1m"
default_department = "district-command"

[[incidents.sla]]
severity = "emergency"
acknowledge = "2m"
resolve = "30m"

[[incidents.sla]]
severity = "critical"
acknowledge = "5m"
resolve = "1h"

[[incidents.sla]]
severity = "warning"
acknowledge = "15m"
resolve = "4h"

[[department]]
id = "water"
name = "Water Authority"
owners = ["Water Resources Bureau"]
contacts = ["water duty desk, ext. 110"]
escalate_to = "district-command"

[[department]]
id = "environment"
name = "Environment Bureau"
contacts = ["environment duty desk, ext. 120"]
escalate_to = "district-command"

[[department]]
id = "traffic"
name = "Traffic Police"
owners = ["Traffic Police Bureau"]
contacts = ["traffic control room, ext. 122"]
escalate_to = "district-command"

[[department]]
id = "district-command"
name = "District Emergency Office"
contacts = ["district duty officer"]
escalate_to = "city-command"

[[department]]
id = "city-command"
name = "City Emergency Command"
contacts = ["city command centre"]
"#;

/// The demo city's districts, drawn by hand around its sensors (`[map] boundaries`).
pub const DISTRICTS_GEOJSON: &str = include_str!("../districts.geojson");

pub struct Demo {
    pub collector: Collector,
    pub city: RunningCity,
    pub agents: Vec<Agent>,
    pub data: PathBuf,
    /// The simulator's anomaly control endpoint.
    pub control: std::net::SocketAddr,
    _tmp: Option<tempfile::TempDir>,
}

/// Lays `extra` over `base`: tables merge key by key, arrays of tables
/// (`[[sensor]]`, `[[rule]]`) are appended, anything else is replaced.
pub fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (Some(toml::Value::Array(b)), toml::Value::Array(e)) => b.extend(e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The kinds the demo city publishes as open data (SensorThings without a
/// token); traffic and noise stay closed.
pub const OPEN_KINDS: [&str; 2] = ["air_quality", "water_level"];

/// Marks the catalogue's sensors of `OPEN_KINDS` open, under CC BY 4.0.
fn open_data(table: &mut toml::Table) {
    let Some(toml::Value::Array(sensors)) = table.get_mut("sensor") else { return };
    for s in sensors.iter_mut().filter_map(toml::Value::as_table_mut) {
        if s.get("kind").and_then(toml::Value::as_str).is_some_and(|k| OPEN_KINDS.contains(&k)) {
            s.insert("open".into(), toml::Value::Boolean(true));
            s.insert("licence".into(), toml::Value::String("CC-BY-4.0".into()));
        }
    }
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"")
}

impl Demo {
    pub async fn start(opts: DemoOptions) -> anyhow::Result<Demo> {
        let (data, tmp) = match &opts.data {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.canonicalize()?, None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("citysense-demo-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let city_plan = City::default();
        let mut text = format!(
            "[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"{}\"\n[store]\npath = \"{}\"\n\n",
            opts.http.as_deref().unwrap_or("127.0.0.1:8080"),
            toml_path(&data.join("collector"))
        );
        // District outlines for the map, written beside the stores so the config can name them.
        let boundaries = data.join("districts.geojson");
        std::fs::write(&boundaries, DISTRICTS_GEOJSON)?;
        text.push_str(&format!("[map]\nboundaries = \"{}\"\n\n", toml_path(&boundaries)));
        text.push_str(&sim::run::catalogue_toml(&city_plan.sensors()));
        text.push_str(DEMO_RULES);
        text.push_str(DEMO_DEPARTMENTS);
        let mut table: toml::Table = toml::from_str(&text)?;
        open_data(&mut table);
        if let Some(extra) = &opts.config {
            let extra_text = std::fs::read_to_string(extra).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", extra.display()))?;
            // Validate the extra file's syntax on its own so errors point into it.
            let extra_table: toml::Table = toml::from_str(&extra_text).map_err(|e| anyhow::anyhow!("{}: {}", extra.display(), e.message()))?;
            merge(&mut table, extra_table);
        }
        let merged = toml::to_string(&table)?;
        let config: CollectorConfig = shared::config::parse("demo collector config", &merged, &data).map_err(|d| anyhow::anyhow!("{d}"))?;
        let collector = Collector::start(config).await?;
        let broker = shared::url::BrokerUrl::parse(&collector.mqtt_url).map_err(anyhow::Error::msg)?;

        let city = RunningCity::start(city_plan, Some((broker.host.clone(), broker.port)), Duration::from_secs(1)).await?;
        let north: Vec<_> = city.devices.iter().filter(|d| d.device.spec.kind == Kind::AirQuality).collect();
        let river: Vec<_> = city.devices.iter().filter(|d| d.device.spec.kind != Kind::AirQuality).collect();
        let mut agents = Vec::new();
        for (gateway, devices, noise) in [("gw-north", north, true), ("gw-river", river, false)] {
            let mut text = format!(
                "gateway = \"{gateway}\"\n[uplink]\nbroker = \"{}\"\nbatch_max = 500\nlinger = \"200ms\"\nhealth_interval = \"2s\"\n[buffer]\npath = \"{}\"\nmax_bytes = \"64MiB\"\nflush = \"100ms\"\n[status]\nlisten = \"127.0.0.1:0\"\n\n",
                collector.mqtt_url,
                toml_path(&data.join(format!("agent-{gateway}")))
            );
            text.push_str(&sim::run::modbus_toml(&devices, opts.poll));
            if noise {
                text.push_str(&sim::run::noise_toml(&collector.mqtt_url));
            }
            let cfg: AgentConfig = shared::config::parse(&format!("demo agent {gateway}"), &text, &data).map_err(|d| anyhow::anyhow!("{d}"))?;
            agents.push(Agent::start(cfg).await?);
        }
        // The control endpoint on a well-known port when it is free, so the
        // README's curl lines work as printed; any free port otherwise.
        let control = match sim::control_http::serve(opts.control, city.control.clone()).await {
            Ok(a) => a,
            Err(_) => sim::control_http::serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), city.control.clone()).await?,
        };
        Ok(Demo { collector, city, agents, data, control, _tmp: tmp })
    }

    pub async fn shutdown(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        self.collector.shutdown().await;
    }
}
