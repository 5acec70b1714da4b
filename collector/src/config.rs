//! The collector's config file, every key documented in `configs/collector.toml`
//! and `docs/collector-config.md`. Each component owns its settings struct
//! and checks its own fields; this file gathers them and checks what spans
//! several (exposure: a listener beyond loopback needs TLS and credentials).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use shared::config::{Problem, Validate};

use crate::catalogue::SensorEntry;
use crate::http::settings::HttpConfig;
use crate::mqtt::settings::{GatewayEntry, MqttConfig, DEFAULT_MQTT_LISTEN};
use crate::sink::settings::InfluxConfig;
use crate::store::settings::StoreConfig;

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
    pub auth: Option<crate::http::auth::AuthConfig>,
    /// How far one batch may move a gateway's sequence.
    #[serde(default)]
    pub ingest: crate::ingest::settings::IngestConfig,
    /// Gateways' credentials: MQTT password and batch key.
    #[serde(default)]
    pub gateway: Vec<GatewayEntry>,
    /// Bounds of the SensorThings endpoint.
    #[serde(default)]
    pub sta: crate::sta::settings::StaConfig,
    /// Departments on duty (`crate::incident`).
    #[serde(default)]
    pub department: Vec<crate::incident::department::DepartmentConfig>,
    /// Incident grouping, default deadlines, working hours.
    #[serde(default)]
    pub incidents: crate::incident::settings::IncidentsConfig,
    /// The dashboard map's district boundaries and basemap tiles.
    #[serde(default)]
    pub map: crate::district::settings::MapConfig,
    /// Cluster mode: batches read from the broker cluster's replicated log.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

impl CollectorConfig {
    pub fn mqtt_listen(&self) -> Option<SocketAddr> {
        self.mqtt.listen_addr()
    }

    pub fn summary(&self) -> String {
        let broker = match &self.mqtt.external {
            Some(e) => format!("external broker {}", e.join(", ")),
            None => format!("embedded broker on {}", self.mqtt.listen.as_deref().unwrap_or(DEFAULT_MQTT_LISTEN)),
        };
        format!("{broker}, HTTP on {}, store at {}, {} catalogued sensor(s), {} rule(s)", self.http.listen, self.store.path.display(), self.sensor.len(), self.rule.len())
    }

    /// One line per retention rule and the sink, as `check` shows them.
    pub fn retention_summary(&self) -> Vec<String> {
        let mut out = self.store.retention_summary();
        if let Some(i) = &self.influxdb {
            out.push(format!("influxdb: {} org {} bucket {} (measurement per {:?})", i.url, i.org, i.bucket, i.measurement).to_lowercase());
        }
        out
    }

    /// What `check` accepts but warns about, printed as `FILE:LINE: path: warning: …` (exit 0).
    pub fn warnings(&self) -> Vec<Problem> {
        let mut w = Vec::new();
        self.mqtt.warnings(&mut w);
        w
    }

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
    pub fn acl(&self) -> crate::mqtt::acl::Acl {
        let gateways = self.gateway.iter().filter(|g| g.password_sha256.is_some()).map(|g| (g.id.clone(), crate::mqtt::acl::Grant::Gateway(g.id.clone())));
        gateways.chain(self.mqtt.user.iter().map(|u| (u.name.clone(), crate::mqtt::acl::Grant::Reader { client_prefix: u.client_id_prefix() }))).collect()
    }

    /// Gateways' batch keys, read from their files.
    pub fn batch_keys(&self, base: &Path) -> Result<HashMap<String, Arc<Vec<u8>>>, shared::auth::SecretError> {
        self.gateway
            .iter()
            .filter_map(|g| g.batch_key_file.as_ref().map(|f| (g, f)))
            .map(|(g, f)| shared::auth::read_secret(&base.join(f)).map(|k| (g.id.clone(), Arc::new(k))))
            .collect()
    }

    /// Safe defaults: a listener reachable from the network needs TLS and
    /// authentication; on loopback the demo and a bench may run open.
    fn validate_exposure(&self, p: &mut Vec<Problem>) {
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
    }
}

impl Validate for CollectorConfig {
    fn validate(&self, base: &Path) -> Vec<Problem> {
        let mut p = Vec::new();
        self.mqtt.validate(base, &mut p);
        if let Some(c) = &self.cluster {
            c.validate(self.mqtt.external.is_some(), &mut p);
        }
        self.http.validate(base, &mut p);
        self.validate_exposure(&mut p);
        if let Some(a) = &self.auth {
            a.validate(&mut p);
            for (i, t) in a.token.iter().enumerate() {
                if let Some(d) = t.department.as_deref().filter(|d| !self.department.iter().any(|x| x.id == *d)) {
                    p.push(Problem::new(format!("auth.token[{i}].department"), format!("`{d}` is not the id of a [[department]]")));
                }
            }
        }
        GatewayEntry::validate_all(&self.gateway, base, &mut p);
        crate::mqtt::settings::MqttUser::validate_all(&self.mqtt.user, &self.gateway, &mut p);
        self.store.validate(&mut p);
        self.ingest.validate(&mut p);
        self.sta.validate(&mut p);
        self.map.validate(base, &mut p);
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
            if let Some(d) = r.department.as_deref().filter(|d| !self.department.iter().any(|x| x.id == *d)) {
                p.push(Problem::new(format!("rule[{i}].department"), format!("`{d}` is not the id of a [[department]]")));
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
        SensorEntry::validate_all(&self.sensor, &mut p);
        self.incidents.validate(&self.department, &mut p);
        p
    }
}
