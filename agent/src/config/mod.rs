//! The agent's config file: plain serde structs, checked once at start-up.
//! Every key is documented in `configs/agent.toml`. Values written as text
//! with a grammar of their own (broker URLs, Modbus addresses, where an MQTT
//! message's sensor id comes from, the status address) are parsed while the
//! file is read: a bad one is a `check` error on its line, and the running
//! agent never parses them again.

mod check_points;
pub mod mqtt_spec;
mod point;
mod text;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shared::config::{ByteSize, HumanDuration};
use shared::url::BrokerUrl;

use crate::source::modbus::ModbusAddress;
use crate::source::timestamp::Zoneless;
use mqtt_spec::{SensorFrom, TimestampFrom};

pub use point::{BadRegister, Modicon, ModiconRef, PointConfig, PointType, RegisterAddress};
pub use text::{Brokers, ConfigText, NotIpPort, Written};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub gateway: String,
    pub uplink: UplinkConfig,
    pub buffer: BufferConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub modbus: Vec<ModbusDevice>,
    #[serde(default)]
    pub mqtt: Vec<MqttSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// One broker, or a cluster's nodes to fail over between.
    pub broker: Brokers,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// With mqtts://: the CA that signed the broker's certificate (system roots otherwise).
    pub ca_file: Option<PathBuf>,
    /// With mqtts://: this gateway's client certificate and its private key (PEM).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The gateway's batch key, shared with the collector's `[[gateway]]`
    /// entry: batches carry its HMAC and only acks signed with it are believed.
    pub batch_key_file: Option<PathBuf>,
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// How long a sent batch may wait for the collector's ack before it is resent.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// Batches sent and not yet acknowledged, at most.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// How often `health/{gateway}` is published.
    #[serde(default = "default_health_interval")]
    pub health_interval: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    DropOldest,
    StopPolling,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    pub path: PathBuf,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    #[serde(default = "default_flush")]
    pub flush: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    #[serde(default = "default_status_listen")]
    pub listen: Written<SocketAddr>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig { listen: default_status_listen() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    pub sensor: String,
    pub address: Written<ModbusAddress>,
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Unmapped registers a single request may read across to join two points.
    #[serde(default)]
    pub max_gap: u16,
    #[serde(default)]
    pub point: Vec<PointConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSource {
    pub broker: Written<BrokerUrl>,
    pub topic: String,
    pub sensor: SensorFrom,
    pub timestamp: Option<TimestampFrom>,
    /// What an RFC 3339 time without a zone means: "reject" (default), "UTC" or "+08:00".
    #[serde(default)]
    pub timestamp_zone: Zoneless,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// Large enough that catching up after an outage, or a burst of many devices
/// polled at once, goes at the collector's pace rather than the round trip's
/// (4 × 500 readings per round trip drained ~40k/s; 4 × 5,000, 112k/s);
/// small batches still go at once when that is all there is.
fn default_batch_max() -> usize {
    5000
}
fn default_linger() -> HumanDuration {
    Duration::from_millis(200).into()
}
fn default_ack_timeout() -> HumanDuration {
    Duration::from_secs(10).into()
}
fn default_max_inflight() -> usize {
    4
}
fn default_health_interval() -> HumanDuration {
    Duration::from_secs(10).into()
}
fn default_max_bytes() -> ByteSize {
    ByteSize(512 << 20)
}
fn default_when_full() -> WhenFull {
    WhenFull::DropOldest
}
fn default_flush() -> HumanDuration {
    Duration::from_millis(100).into()
}
fn default_status_listen() -> Written<SocketAddr> {
    Written::parse("127.0.0.1:9102").expect("a valid default")
}
fn default_unit() -> u8 {
    1
}
fn default_interval() -> HumanDuration {
    Duration::from_secs(5).into()
}
fn default_timeout() -> HumanDuration {
    Duration::from_secs(1).into()
}
fn default_retries() -> u32 {
    2
}

impl AgentConfig {
    /// A one-line account of what will run, printed by `check`.
    pub fn summary(&self) -> String {
        let points: usize = self.modbus.iter().map(|d| d.point.len()).sum();
        let fields: usize = self.mqtt.iter().map(|m| m.fields.len()).sum();
        format!(
            "gateway {}: {} Modbus device(s) with {} point(s), {} MQTT source(s) with {} field(s), uplink {}, buffer {} (max {} bytes, {})",
            self.gateway,
            self.modbus.len(),
            points,
            self.mqtt.len(),
            fields,
            self.uplink.broker,
            self.buffer.path.display(),
            self.buffer.max_bytes.0,
            match self.buffer.when_full {
                WhenFull::DropOldest => "drop_oldest",
                WhenFull::StopPolling => "stop_polling",
            }
        )
    }
}

impl AgentConfig {
    /// What will be polled, one line per device and source: `check --verbose`.
    pub fn plan(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.modbus {
            let map = crate::source::modbus::RegisterMap::plan(d.point.iter().map(Into::into).collect(), d.max_gap);
            let requests: Vec<String> = map.requests.iter().map(|r| format!("{} {}+{}", r.table.name(), r.start, r.count)).collect();
            let metrics: Vec<&str> = d.point.iter().map(|p| p.metric.as_str()).collect();
            out.push(format!(
                "{} at {} unit {} every {} (timeout {}, {} retries): {} in {} request(s): {}",
                d.sensor,
                d.address,
                d.unit,
                humantime::format_duration(d.interval.0),
                humantime::format_duration(d.timeout.0),
                d.retries,
                metrics.join(", "),
                requests.len(),
                requests.join(", ")
            ));
            for pt in &d.point {
                out.push(format!("  {}", point_plan(pt)));
            }
        }
        for (i, m) in self.mqtt.iter().enumerate() {
            let fields: Vec<String> = m.fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            out.push(format!("mqtt[{i}] {} topic {} sensor {}: {}", m.broker, m.topic, m.sensor, fields.join(", ")));
        }
        out
    }
}

/// One point as `check -v` shows it, defaults spelled out: a missing `type`
/// reads u16 and a missing `order` reads ABCD, which is silently wrong for a
/// 32-bit value of another order, so the technician should see both.
fn point_plan(pt: &PointConfig) -> String {
    let Ok((table, address)) = pt.location() else { return format!("{}: (location not resolved)", pt.metric) };
    let ty = pt.point_type();
    let width = ty.registers_type().registers();
    let mut s = format!("{}: {} {}", pt.metric, table.name(), address);
    if width > 1 {
        s.push_str(&format!("..{}", address as u32 + width as u32 - 1));
    }
    let datasheet = point::Modicon::prefix(table).to_string() + &format!("{:04}", address as u32 + 1);
    s.push_str(&format!(" (datasheet {datasheet})"));
    // A bit field's type is its bits: "bit 3", "bits 4..=7".
    match (pt.bit_range(), pt.data_type) {
        (Some((a, b)), _) if a == b => s.push_str(&format!(" bit {a}")),
        (Some((a, b)), _) => s.push_str(&format!(" bits {a}..={b}")),
        (None, Some(t)) => s.push_str(&format!(" {}", t.name())),
        (None, None) => s.push_str(" u16 (default: no `type` given)"),
    }
    if pt.bit_range().is_none() && width > 1 {
        match pt.order {
            Some(o) => s.push_str(&format!(" {}", o.name())),
            None => s.push_str(" ABCD (default: no `order` given; `probe --type` shows every order)"),
        }
    }
    if pt.scale != 1.0 || pt.offset != 0.0 {
        s.push_str(&format!(" = raw * {} + {}", pt.scale, pt.offset));
    }
    if let Some([lo, hi]) = pt.range {
        s.push_str(&format!(", plausible {lo}..={hi}"));
    }
    s
}
