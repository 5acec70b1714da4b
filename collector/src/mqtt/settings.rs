//! The MQTT side's settings: `[mqtt]`, `[[mqtt.user]]` and the gateways'
//! credentials (`[[gateway]]`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::config::{ByteSize, Problem};
use shared::topics::valid_id;
use shared::url::BrokerUrl;

use crate::tls::TlsFiles;

pub const DEFAULT_MQTT_LISTEN: &str = "127.0.0.1:1883";

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Address of the embedded broker (ignored when `external` is set).
    pub listen: Option<String>,
    /// An external broker, e.g. `mqtt://broker:1883`, instead of the embedded one.
    /// Several addresses are the nodes of one broker cluster, tried in order
    /// whenever the connection to the current one fails.
    #[serde(default, deserialize_with = "some_one_or_many")]
    pub external: Option<Vec<String>>,
    /// Largest MQTT packet accepted; agents' batches must fit.
    #[serde(default = "default_max_packet")]
    pub max_packet: ByteSize,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// With an `mqtts://` external broker: the CA that signed its certificate
    /// (PEM; without it, the system's roots), and this collector's own
    /// certificate and key, for a broker that asks for one.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
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
    /// Readings per second the MQTT live feed (`live/…`) publishes at most;
    /// past it, readings spread across the batch are left out and counted.
    /// Each is one MQTT message the broker routes to every subscriber: at
    /// hundreds of thousands a second they would crowd out the alerts and
    /// the batches going through the same broker.
    #[serde(default = "default_live_rate")]
    pub live_rate: u32,
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
    /// Its client ids must start with this (default `<name>-`), so that no
    /// user can take over another's client id and knock it off the broker.
    pub client_id_prefix: Option<String>,
}

impl MqttUser {
    pub fn client_id_prefix(&self) -> String {
        self.client_id_prefix.clone().unwrap_or_else(|| format!("{}-", self.name))
    }

    /// Names and client-id prefixes that cannot be confused with a gateway's,
    /// the collector's or each other's.
    pub fn validate_all(users: &[MqttUser], gateways: &[GatewayEntry], p: &mut Vec<Problem>) {
        for (i, u) in users.iter().enumerate() {
            let at = |f: &str| format!("mqtt.user[{i}].{f}");
            if !valid_id(&u.name) {
                p.push(Problem::new(at("name"), format!("`{}` is not a valid user name (1-128 of A-Z a-z 0-9 - _ . :)", u.name)));
            }
            if let Some(g) = gateways.iter().position(|g| g.id == u.name) {
                p.push(Problem::new(at("name"), format!("`{}` is already gateway[{g}]; a feed user needs a name of its own", u.name)));
            }
            if u.name == super::INTERNAL_USER {
                p.push(Problem::new(at("name"), format!("`{}` is the collector's own user", u.name)));
            }
            if let Some(j) = users[..i].iter().position(|o| o.name == u.name) {
                p.push(Problem::new(at("name"), format!("`{}` is already mqtt.user[{j}]", u.name)));
            }
            if u.password_sha256.len() != 64 || shared::auth::unhex(&u.password_sha256).is_none() {
                p.push(Problem::new(at("password_sha256"), "must be 64 hex digits (citysense-collector token prints one)"));
            }
            let prefix = u.client_id_prefix();
            if prefix.is_empty() || prefix.starts_with("citysense-") || prefix.chars().any(|c| c.is_control() || matches!(c, '/' | '+' | '#')) {
                p.push(Problem::new(
                    at("client_id_prefix"),
                    format!("`{prefix}` must be non-empty, printable, free of / + # and not start with `citysense-` (gateways' and the collector's ids)"),
                ));
            }
            for (j, o) in users.iter().enumerate().filter(|(j, _)| *j != i) {
                if o.client_id_prefix().starts_with(&prefix) && (j > i || o.client_id_prefix() != prefix) {
                    p.push(Problem::new(
                        at("client_id_prefix"),
                        format!("`{prefix}` is also the start of mqtt.user[{j}]'s prefix `{}`: it could take over that user's client ids", o.client_id_prefix()),
                    ));
                }
            }
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: None,
            external: None,
            max_packet: default_max_packet(),
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            shared_group: None,
            tls: None,
            gateway_rate: default_gateway_rate(),
            live_rate: default_live_rate(),
            user: Vec::new(),
        }
    }
}

fn default_gateway_rate() -> u32 {
    50_000
}

fn default_live_rate() -> u32 {
    20_000
}

fn default_max_packet() -> ByteSize {
    ByteSize(4 << 20)
}

impl MqttConfig {
    /// The embedded broker's address; None with an external broker.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        if self.external.is_some() {
            return None;
        }
        self.listen.as_deref().unwrap_or(DEFAULT_MQTT_LISTEN).parse().ok()
    }

    /// What `check` accepts but an installer should hear about.
    pub fn warnings(&self, w: &mut Vec<Problem>) {
        if let Some(e) = &self.external {
            let e = e.join(", ");
            let missing: Vec<&str> =
                [("mqtt.username", self.username.is_none()), ("mqtt.password_file", self.password_file.is_none())].into_iter().filter(|(_, m)| *m).map(|(k, _)| k).collect();
            if !missing.is_empty() {
                w.push(Problem::new(
                    "mqtt.external",
                    format!(
                        "`{e}` is reached without credentials (no {}): a broker that lets this collector in anonymously lets anyone publish readings, states and alerts; close it (deploy/mosquitto.conf) and set mqtt.username and mqtt.password_file",
                        missing.join(", no ")
                    ),
                ));
            }
        }
    }

    pub fn validate(&self, base: &Path, p: &mut Vec<Problem>) {
        if let Some(list) = &self.external {
            let field = |i: usize| if list.len() == 1 { "mqtt.external".to_string() } else { format!("mqtt.external[{i}]") };
            let mut tls = Vec::new();
            for (i, e) in list.iter().enumerate() {
                match BrokerUrl::parse(e) {
                    Ok(u) => tls.push(u.tls),
                    Err(e) => p.push(Problem::new(field(i), e.to_string())),
                }
            }
            if tls.contains(&true) && tls.contains(&false) {
                // The same login goes to every node: one without TLS would show it to the network.
                p.push(Problem::new("mqtt.external", "mixes mqtt:// and mqtts:// nodes: list the cluster's nodes all with TLS or all without"));
            }
            if self.listen.is_some() {
                p.push(Problem::new("mqtt.listen", "set either `listen` (embedded broker) or `external`, not both"));
            }
        } else if let Some(l) = &self.listen {
            if l.parse::<SocketAddr>().is_err() {
                p.push(Problem::new("mqtt.listen", format!("`{l}` is not IP:PORT")));
            }
        }
        if let Some(g) = &self.shared_group {
            if !valid_id(g) {
                p.push(Problem::new("mqtt.shared_group", format!("`{g}` is not a valid group name")));
            }
        }
        if self.gateway_rate == 0 {
            p.push(Problem::new("mqtt.gateway_rate", "must be at least 1 reading per second"));
        }
        if self.max_packet.0 < 16 * 1024 || self.max_packet.0 > 256 << 20 {
            p.push(Problem::new("mqtt.max_packet", "must be between 16KiB and 256MiB"));
        }
        if let Some(f) = &self.password_file {
            if !base.join(f).is_file() {
                p.push(Problem::new("mqtt.password_file", format!("file `{}` does not exist", base.join(f).display())));
            }
        }
        if let Some(t) = &self.tls {
            t.validate("mqtt.tls", base, p);
        }
        self.validate_client_tls(base, p);
    }

    /// Whether the external broker is reached over TLS (`mqtts://`).
    pub fn external_tls(&self) -> bool {
        self.external.iter().flatten().any(|e| BrokerUrl::parse(e).is_ok_and(|u| u.tls))
    }

    fn validate_client_tls(&self, base: &Path, p: &mut Vec<Problem>) {
        let files = [("mqtt.ca_file", &self.ca_file), ("mqtt.cert_file", &self.cert_file), ("mqtt.key_file", &self.key_file)];
        if !self.external_tls() {
            for (field, _) in files.iter().filter(|(_, f)| f.is_some()) {
                p.push(Problem::new(*field, "is for an external broker reached over TLS: set mqtt.external to mqtts://HOST:PORT, or remove it"));
            }
            return;
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push(Problem::new(
                if self.cert_file.is_some() { "mqtt.key_file" } else { "mqtt.cert_file" },
                "`cert_file` and `key_file` go together (the client certificate and its key)",
            ));
        }
        for (field, f) in files {
            if let Some(f) = f.as_ref().filter(|f| !base.join(f).is_file()) {
                p.push(Problem::new(field, format!("file `{}` does not exist", base.join(f).display())));
            }
        }
    }
}

impl GatewayEntry {
    /// Each gateway's id and credentials, and no id twice.
    pub fn validate_all(gateways: &[GatewayEntry], base: &Path, p: &mut Vec<Problem>) {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, g) in gateways.iter().enumerate() {
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
                    p.push(Problem::new(format!("gateway[{i}].batch_key_file"), e.to_string()));
                }
            }
        }
    }
}

fn some_one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    shared::config::one_or_many(d).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::CollectorConfig;

    /// What `check` says of `[mqtt]` given as `mqtt` (files under a fresh directory).
    fn check(mqtt: &str, files: &[&str]) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let text = format!("[mqtt]\n{mqtt}\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n", dir.path().join("store").display());
        shared::config::parse::<CollectorConfig>("collector.toml", &text, dir.path()).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn tls_to_an_external_broker_takes_its_ca_and_a_certificate_with_its_key() {
        let tls = "external = [\"mqtts://nats-1:8883\", \"mqtts://nats-2:8883\"]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"c.key\"";
        check(tls, &["ca.pem", "c.pem", "c.key"]).unwrap();
        check("external = \"mqtts://broker.city.example:8883\"", &[]).expect("the system's roots without ca_file");
        for (mqtt, files, says) in [
            ("external = \"mqtt://broker:1883\"\nca_file = \"ca.pem\"", &["ca.pem"][..], "mqtt.ca_file: is for an external broker reached over TLS"),
            ("listen = \"127.0.0.1:1883\"\ncert_file = \"c.pem\"\nkey_file = \"c.key\"", &["c.pem", "c.key"][..], "mqtt.cert_file: is for an external broker reached over TLS"),
            ("external = \"mqtts://broker:8883\"\ncert_file = \"c.pem\"", &["c.pem"][..], "mqtt.key_file: `cert_file` and `key_file` go together"),
            ("external = \"mqtts://broker:8883\"\nca_file = \"ca.pem\"", &[][..], "mqtt.ca_file: file"),
            ("external = [\"mqtts://nats-1:8883\", \"mqtt://nats-2:1883\"]", &[][..], "mqtt.external: mixes mqtt:// and mqtts:// nodes"),
        ] {
            let e = check(mqtt, files).expect_err(mqtt);
            assert!(e.contains(says), "{mqtt}: {e}");
        }
    }
}
