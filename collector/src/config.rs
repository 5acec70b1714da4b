//! The collector's config file; every key is documented in `configs/collector.toml`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use shared::config::{ByteSize, HumanDuration, Problem, Validate};
use shared::topics::valid_id;
use shared::url::BrokerUrl;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub http: HttpConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub sensor: Vec<SensorEntry>,
    /// Alert rules loaded at start (more can be added over the API).
    #[serde(default)]
    pub rule: Vec<crate::rules::Rule>,
    /// Alert changes are POSTed here, from a durable outbox.
    #[serde(default)]
    pub webhook: Vec<crate::feed::webhook::WebhookConfig>,
    /// Write every stored reading to InfluxDB (v2 write API) as well.
    pub influxdb: Option<InfluxConfig>,
    /// API tokens; none = an open API, allowed on loopback only.
    pub auth: Option<crate::auth::AuthConfig>,
    /// Gateways' credentials: MQTT password and batch key.
    #[serde(default)]
    pub gateway: Vec<GatewayEntry>,
}

/// Certificate and key (PEM) for a TLS listener; with `ca_file`, clients
/// must present a certificate signed by that CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayEntry {
    pub id: String,
    /// Hex SHA-256 of the gateway's MQTT password (the embedded broker checks it).
    pub password_sha256: Option<String>,
    /// The gateway's batch key (the same file content as the agent's
    /// `uplink.batch_key_file`): batches must carry its HMAC, acks are signed with it.
    pub batch_key_file: Option<PathBuf>,
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Address of the embedded broker (ignored when `external` is set).
    pub listen: Option<String>,
    /// An external broker, e.g. `mqtt://broker:1883`, instead of the embedded one.
    pub external: Option<String>,
    /// Largest MQTT packet accepted; agents' batches must fit.
    #[serde(default = "default_max_packet")]
    pub max_packet: ByteSize,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// With several collectors on one broker: batches are spread across the
    /// collectors of this group (an MQTT v5 / Mosquitto shared subscription).
    pub shared_group: Option<String>,
    /// TLS for the embedded broker's listener.
    pub tls: Option<TlsFiles>,
    /// Readings per second one gateway may send (bursts of 10 s allowed);
    /// batches over it are refused unacknowledged, so the agent sends them
    /// again later: it slows a runaway or hostile gateway, it loses nothing.
    #[serde(default = "default_gateway_rate")]
    pub gateway_rate: u32,
    /// Who else may connect to the embedded broker, e.g. emergency-command
    /// systems subscribing to the alert feed.
    #[serde(default)]
    pub user: Vec<MqttUser>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttUser {
    pub name: String,
    /// Hex SHA-256 of the password.
    pub password_sha256: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig { listen: None, external: None, max_packet: default_max_packet(), username: None, password_file: None, shared_group: None, tls: None, gateway_rate: default_gateway_rate(), user: Vec::new() }
    }
}

fn default_gateway_rate() -> u32 {
    50_000
}

fn default_max_packet() -> ByteSize {
    ByteSize(4 << 20)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// HTTPS for the API and dashboard.
    pub tls: Option<TlsFiles>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_http_listen(), tls: None }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Keep series in the embedded store. With `false` only `[influxdb]`
    /// keeps them; the store still holds delivery progress and the sink's log.
    #[serde(default = "yes")]
    pub series: bool,
    /// How long each resolution is kept, unless a `[[store.retention]]` entry says otherwise.
    #[serde(default)]
    pub keep: KeepConfig,
    /// Per-kind or per-metric retention; the first entry that matches a series wins.
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
    /// How often expired data is deleted.
    #[serde(default = "default_expire_every")]
    pub expire_every: HumanDuration,
}

fn default_expire_every() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

/// A retention period: a duration (`30d`, `1y`) or `forever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime(pub Option<std::time::Duration>);

impl<'de> Deserialize<'de> for Lifetime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "forever" {
            return Ok(Lifetime(None));
        }
        humantime::parse_duration(&s).map(|d| Lifetime(Some(d))).map_err(|e| serde::de::Error::custom(format!("`{s}` is neither a duration ({e}; e.g. \"30d\", \"1y\") nor \"forever\"")))
    }
}

impl std::fmt::Display for Lifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("forever"),
            // `90d`, not humantime's `2months 29days 2h 52m 48s`.
            Some(d) if d.as_secs() % 86_400 == 0 && d.subsec_nanos() == 0 => write!(f, "{}d", d.as_secs() / 86_400),
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepConfig {
    /// Raw samples.
    #[serde(default = "default_keep_raw")]
    pub raw: Lifetime,
    /// 1-minute rollups (min, mean, max, count, last).
    #[serde(default = "default_keep_minute")]
    pub minute: Lifetime,
    /// 1-hour rollups.
    #[serde(default = "default_keep_hour")]
    pub hour: Lifetime,
}

impl Default for KeepConfig {
    fn default() -> Self {
        KeepConfig { raw: default_keep_raw(), minute: default_keep_minute(), hour: default_keep_hour() }
    }
}

const DAY: u64 = 86_400;

fn default_keep_raw() -> Lifetime {
    Lifetime(Some(std::time::Duration::from_secs(30 * DAY)))
}

fn default_keep_minute() -> Lifetime {
    Lifetime(Some(std::time::Duration::from_secs(365 * DAY)))
}

fn default_keep_hour() -> Lifetime {
    Lifetime(Some(std::time::Duration::from_secs(10 * 365 * DAY)))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Sensor kind from the catalogue, e.g. `traffic`.
    pub kind: Option<String>,
    /// Metric, e.g. `noise_laeq`.
    pub metric: Option<String>,
    pub raw: Option<Lifetime>,
    pub minute: Option<Lifetime>,
    pub hour: Option<Lifetime>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://influx:8086`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// The API token, read from this file (never from the config itself, never logged)…
    pub token_file: Option<PathBuf>,
    /// …or from this environment variable.
    pub token_env: Option<String>,
    /// `metric`: one measurement per metric; `kind`: one per sensor kind with a `metric` tag.
    #[serde(default)]
    pub measurement: crate::lineproto::Scheme,
    /// Points per write request.
    #[serde(default = "default_batch_points")]
    pub batch_points: usize,
    /// A write that takes longer is abandoned and retried.
    #[serde(default = "default_influx_timeout")]
    pub timeout: HumanDuration,
}

fn default_batch_points() -> usize {
    5000
}

fn default_influx_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

impl InfluxConfig {
    /// The token, from the file or environment variable named in the config.
    pub fn token(&self, base: &Path) -> Result<String, String> {
        match (&self.token_file, &self.token_env) {
            (Some(f), _) => std::fs::read_to_string(base.join(f)).map(|t| t.trim().to_string()).map_err(|e| format!("influxdb.token_file {}: {e}", base.join(f).display())),
            (None, Some(var)) => std::env::var(var).map(|t| t.trim().to_string()).map_err(|_| format!("influxdb.token_env: environment variable `{var}` is not set")),
            (None, None) => Ok(String::new()),
        }
    }

    fn validate(&self, base: &Path, p: &mut Vec<Problem>) {
        match self.url.parse::<axum::http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some() => {}
            _ => p.push(Problem::new("influxdb.url", format!("`{}` is not an http:// or https:// URL", self.url))),
        }
        if self.org.trim().is_empty() {
            p.push(Problem::new("influxdb.org", "must not be empty"));
        }
        if self.bucket.trim().is_empty() {
            p.push(Problem::new("influxdb.bucket", "must not be empty"));
        }
        if self.token_file.is_some() && self.token_env.is_some() {
            p.push(Problem::new("influxdb.token_env", "give `token_file` or `token_env`, not both"));
        }
        if let Some(f) = &self.token_file {
            if !base.join(f).is_file() {
                p.push(Problem::new("influxdb.token_file", format!("file `{}` does not exist", base.join(f).display())));
            }
        }
        if !(1..=100_000).contains(&self.batch_points) {
            p.push(Problem::new("influxdb.batch_points", "must be between 1 and 100000"));
        }
    }
}

/// One entry of the data-resource catalogue (资源目录).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorEntry {
    pub id: String,
    pub kind: String,
    pub name: Option<String>,
    pub district: Option<String>,
    pub owner: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// The gateway expected to carry this sensor.
    pub gateway: Option<String>,
    /// Install date, `YYYY-MM-DD`.
    pub installed: Option<String>,
    /// Unit per metric, e.g. `{ pm25 = "ug/m3" }`.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
}

pub const DEFAULT_MQTT_LISTEN: &str = "127.0.0.1:1883";

impl CollectorConfig {
    pub fn mqtt_listen(&self) -> Option<SocketAddr> {
        if self.mqtt.external.is_some() {
            return None;
        }
        self.mqtt.listen.as_deref().unwrap_or(DEFAULT_MQTT_LISTEN).parse().ok()
    }

    pub fn summary(&self) -> String {
        let broker = match &self.mqtt.external {
            Some(e) => format!("external broker {e}"),
            None => format!("embedded broker on {}", self.mqtt.listen.as_deref().unwrap_or(DEFAULT_MQTT_LISTEN)),
        };
        format!("{broker}, HTTP on {}, store at {}, {} catalogued sensor(s), {} rule(s)", self.http.listen, self.store.path.display(), self.sensor.len(), self.rule.len())
    }

    /// One line per retention rule, as `check` shows them.
    pub fn retention_summary(&self) -> Vec<String> {
        if !self.store.series {
            return vec!["store: series not kept here (series = false)".into()];
        }
        let k = &self.store.keep;
        let mut out = vec![format!("retention: raw {}, 1-minute rollups {}, 1-hour rollups {} (deleted every {})", k.raw, k.minute, k.hour, humantime::format_duration(self.store.expire_every.0))];
        for r in &self.store.retention {
            let what = match (&r.kind, &r.metric) {
                (Some(k), Some(m)) => format!("kind {k}, metric {m}"),
                (Some(k), None) => format!("kind {k}"),
                (None, Some(m)) => format!("metric {m}"),
                (None, None) => "nothing".into(),
            };
            let or = |l: Option<Lifetime>, d: Lifetime| l.unwrap_or(d);
            out.push(format!("retention for {what}: raw {}, 1-minute {}, 1-hour {}", or(r.raw, k.raw), or(r.minute, k.minute), or(r.hour, k.hour)));
        }
        if let Some(i) = &self.influxdb {
            out.push(format!("influxdb: {} org {} bucket {} (measurement per {:?})", i.url, i.org, i.bucket, i.measurement).to_lowercase());
        }
        out
    }
}

impl CollectorConfig {
    /// Users of the embedded broker (name → password hash); None leaves it open.
    pub fn broker_users(&self) -> Option<HashMap<String, String>> {
        let users: HashMap<String, String> = self
            .gateway
            .iter()
            .filter_map(|g| g.password_sha256.clone().map(|h| (g.id.clone(), h)))
            .chain(self.mqtt.user.iter().map(|u| (u.name.clone(), u.password_sha256.clone())))
            .collect();
        (!users.is_empty()).then_some(users)
    }

    /// Topic grants of the broker's users.
    pub fn acl(&self) -> crate::acl::Acl {
        let gateways = self.gateway.iter().filter(|g| g.password_sha256.is_some()).map(|g| (g.id.clone(), crate::acl::Grant::Gateway(g.id.clone())));
        gateways.chain(self.mqtt.user.iter().map(|u| (u.name.clone(), crate::acl::Grant::Reader))).collect()
    }

    /// Gateways' batch keys, read from their files.
    pub fn batch_keys(&self, base: &Path) -> Result<HashMap<String, Arc<Vec<u8>>>, String> {
        self.gateway.iter().filter_map(|g| g.batch_key_file.as_ref().map(|f| (g, f))).map(|(g, f)| shared::auth::read_secret(&base.join(f)).map(|k| (g.id.clone(), Arc::new(k)))).collect()
    }

    /// Safe defaults: a listener reachable from the network needs TLS and
    /// authentication; on loopback the demo and a bench may run open.
    fn validate_exposure(&self, base: &Path, p: &mut Vec<Problem>) {
        let tokens = self.auth.as_ref().is_some_and(|a| !a.token.is_empty());
        if self.http.listen.parse::<SocketAddr>().is_ok() && !is_loopback(&self.http.listen) && (self.http.tls.is_none() || !tokens) {
            p.push(Problem::new(
                "http.listen",
                format!("`{}` is not loopback: add [http.tls] (cert_file, key_file) and at least one [[auth.token]], or listen on 127.0.0.1 (README: Security)", self.http.listen),
            ));
        }
        if let Some(listen) = self.mqtt_listen().map(|a| a.to_string()) {
            let gateways_authenticated = !self.gateway.is_empty() && self.gateway.iter().all(|g| g.password_sha256.is_some() && g.batch_key_file.is_some());
            if !is_loopback(&listen) && (self.mqtt.tls.is_none() || !gateways_authenticated) {
                p.push(Problem::new(
                    "mqtt.listen",
                    format!("`{listen}` is not loopback: add [mqtt.tls] (cert_file, key_file) and a [[gateway]] with password_sha256 and batch_key_file for every gateway, or listen on 127.0.0.1 (README: Security)"),
                ));
            }
        }
        for (name, tls) in [("http.tls", &self.http.tls), ("mqtt.tls", &self.mqtt.tls)] {
            let Some(t) = tls else { continue };
            for (field, f) in [("cert_file", Some(&t.cert_file)), ("key_file", Some(&t.key_file)), ("ca_file", t.ca_file.as_ref())] {
                if let Some(f) = f.filter(|f| !base.join(f).is_file()) {
                    p.push(Problem::new(format!("{name}.{field}"), format!("file `{}` does not exist", base.join(f).display())));
                }
            }
        }
        if let Some(a) = &self.auth {
            let mut names: HashMap<&str, usize> = HashMap::new();
            for (i, t) in a.token.iter().enumerate() {
                if t.sha256.len() != 64 || shared::auth::unhex(&t.sha256).is_none() {
                    p.push(Problem::new(format!("auth.token[{i}].sha256"), "must be 64 hex digits (citysense-collector token prints one)"));
                }
                if let Some(first) = names.insert(&t.name, i) {
                    p.push(Problem::new(format!("auth.token[{i}].name"), format!("`{}` is already auth.token[{first}]", t.name)));
                }
            }
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, g) in self.gateway.iter().enumerate() {
            if !valid_id(&g.id) {
                p.push(Problem::new(format!("gateway[{i}].id"), format!("`{}` is not a valid gateway id", g.id)));
            }
            if let Some(first) = ids.insert(&g.id, i) {
                p.push(Problem::new(format!("gateway[{i}].id"), format!("`{}` is already gateway[{first}]", g.id)));
            }
            if let Some(h) = &g.password_sha256 {
                if h.len() != 64 || shared::auth::unhex(h).is_none() {
                    p.push(Problem::new(format!("gateway[{i}].password_sha256"), "must be 64 hex digits (citysense-collector token prints one)"));
                }
            }
            if let Some(f) = &g.batch_key_file {
                if let Err(e) = shared::auth::read_secret(&base.join(f)) {
                    p.push(Problem::new(format!("gateway[{i}].batch_key_file"), e));
                }
            }
        }
    }
}

impl Validate for CollectorConfig {
    fn validate(&self, base: &Path) -> Vec<Problem> {
        let mut p = Vec::new();
        if let Some(e) = &self.mqtt.external {
            match BrokerUrl::parse(e) {
                Ok(u) if u.tls => p.push(Problem::new("mqtt.external", "mqtts:// (TLS) is not supported by this build yet")),
                Ok(_) => {}
                Err(msg) => p.push(Problem::new("mqtt.external", msg)),
            }
            if self.mqtt.listen.is_some() {
                p.push(Problem::new("mqtt.listen", "set either `listen` (embedded broker) or `external`, not both"));
            }
        } else if let Some(l) = &self.mqtt.listen {
            if l.parse::<SocketAddr>().is_err() {
                p.push(Problem::new("mqtt.listen", format!("`{l}` is not IP:PORT")));
            }
        }
        if let Some(g) = &self.mqtt.shared_group {
            if !valid_id(g) {
                p.push(Problem::new("mqtt.shared_group", format!("`{g}` is not a valid group name")));
            }
        }
        if self.mqtt.gateway_rate == 0 {
            p.push(Problem::new("mqtt.gateway_rate", "must be at least 1 reading per second"));
        }
        if self.mqtt.max_packet.0 < 16 * 1024 || self.mqtt.max_packet.0 > 256 << 20 {
            p.push(Problem::new("mqtt.max_packet", "must be between 16KiB and 256MiB"));
        }
        if let Some(f) = &self.mqtt.password_file {
            if !base.join(f).is_file() {
                p.push(Problem::new("mqtt.password_file", format!("file `{}` does not exist", base.join(f).display())));
            }
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            p.push(Problem::new("http.listen", format!("`{}` is not IP:PORT", self.http.listen)));
        }
        self.validate_exposure(base, &mut p);
        for (i, r) in self.store.retention.iter().enumerate() {
            if r.kind.is_none() && r.metric.is_none() {
                p.push(Problem::new(format!("store.retention[{i}]"), "name the `kind` or `metric` it applies to"));
            }
            if r.raw.is_none() && r.minute.is_none() && r.hour.is_none() {
                p.push(Problem::new(format!("store.retention[{i}]"), "give at least one of `raw`, `minute`, `hour`"));
            }
        }
        if self.store.expire_every.0 < std::time::Duration::from_secs(1) {
            p.push(Problem::new("store.expire_every", "must be at least 1s"));
        }
        match &self.influxdb {
            Some(i) => i.validate(base, &mut p),
            None if !self.store.series => p.push(Problem::new("store.series", "with `series = false` and no [influxdb], nothing would keep the readings")),
            None => {}
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, r) in self.rule.iter().enumerate() {
            for (field, msg) in r.validate() {
                p.push(Problem::new(format!("rule[{i}].{field}"), msg));
            }
            if let Some(first) = ids.insert(&r.id, i) {
                p.push(Problem::new(format!("rule[{i}].id"), format!("`{}` is already rule[{first}]", r.id)));
            }
        }
        for (i, w) in self.webhook.iter().enumerate() {
            if let Some(msg) = w.validate() {
                p.push(Problem::new(format!("webhook[{i}].url"), msg));
            }
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.sensor.iter().enumerate() {
            let path = format!("sensor[{i}]");
            if !valid_id(&s.id) {
                p.push(Problem::new(format!("{path}.id"), format!("`{}` is not a valid sensor id", s.id)));
            }
            if let Some(first) = seen.insert(&s.id, i) {
                p.push(Problem::new(format!("{path}.id"), format!("`{}` is already catalogued as sensor[{first}]", s.id)));
            }
            if s.kind.is_empty() {
                p.push(Problem::new(format!("{path}.kind"), "must not be empty"));
            }
            if s.lat.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
                p.push(Problem::new(format!("{path}.lat"), "must be between -90 and 90"));
            }
            if s.lon.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
                p.push(Problem::new(format!("{path}.lon"), "must be between -180 and 180"));
            }
            if s.lat.is_some() != s.lon.is_some() {
                p.push(Problem::new(path.clone(), "give both `lat` and `lon`, or neither"));
            }
        }
        p
    }
}
