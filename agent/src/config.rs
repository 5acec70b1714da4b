//! The agent's config file: plain serde structs, checked once at start-up.
//! Every key is documented in `configs/agent.toml`. Values written as text
//! with a grammar of their own (broker URLs, Modbus addresses, where an MQTT
//! message's sensor id comes from, the status address) are parsed while the
//! file is read: a bad one is a `check` error on its line, and the running
//! agent never parses them again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use shared::config::{ByteSize, HumanDuration, Problem, Validate};
use shared::topics::valid_id;
use shared::url::BrokerUrl;

use crate::source::modbus::{DataType, ModbusAddress, Table, WordOrder};
use crate::source::mqtt::{SensorFrom, TimestampFrom};

/// Text in the file with a grammar of its own, parsed when the file is read.
pub trait ConfigText: Sized {
    type Err: fmt::Display;
    fn parse_text(s: &str) -> Result<Self, Self::Err>;
}

impl ConfigText for BrokerUrl {
    /// `shared::url`'s own message, which names the URL and the fix.
    type Err = String;
    fn parse_text(s: &str) -> Result<BrokerUrl, String> {
        BrokerUrl::parse(s)
    }
}

impl ConfigText for ModbusAddress {
    type Err = crate::source::modbus::AddressError;
    fn parse_text(s: &str) -> Result<ModbusAddress, Self::Err> {
        ModbusAddress::parse(s)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not IP:PORT")]
pub struct NotIpPort(String);

impl ConfigText for SocketAddr {
    type Err = NotIpPort;
    fn parse_text(s: &str) -> Result<SocketAddr, NotIpPort> {
        s.parse().map_err(|_| NotIpPort(s.to_string()))
    }
}

/// A value parsed from the config, with its text as written: summaries, the
/// verbose plan and status show what the technician wrote (`mqtt://broker`,
/// not `mqtt://broker:1883`). Derefs to the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    text: String,
    value: T,
}

impl<T: ConfigText> Written<T> {
    pub fn parse(text: &str) -> Result<Written<T>, T::Err> {
        T::parse_text(text).map(|value| Written { text: text.to_string(), value })
    }
}

impl<T> Written<T> {
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl<T> std::ops::Deref for Written<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> fmt::Display for Written<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de, T: ConfigText> Deserialize<'de> for Written<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Written::parse(&text).map_err(serde::de::Error::custom)
    }
}

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
    pub broker: Written<BrokerUrl>,
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
pub struct PointConfig {
    pub metric: String,
    pub table: Table,
    pub address: u16,
    #[serde(rename = "type", default = "default_type")]
    pub data_type: DataType,
    #[serde(default)]
    pub order: WordOrder,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSource {
    pub broker: Written<BrokerUrl>,
    pub topic: String,
    pub sensor: SensorFrom,
    pub timestamp: Option<TimestampFrom>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

fn default_batch_max() -> usize {
    500
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
fn default_type() -> DataType {
    DataType::U16
}
fn one() -> f64 {
    1.0
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
        }
        for (i, m) in self.mqtt.iter().enumerate() {
            let fields: Vec<String> = m.fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            out.push(format!("mqtt[{i}] {} topic {} sensor {}: {}", m.broker, m.topic, m.sensor, fields.join(", ")));
        }
        out
    }
}

fn check_file(problems: &mut Vec<Problem>, base: &Path, path: &str, file: &Option<PathBuf>) {
    if let Some(f) = file {
        let full = base.join(f);
        if !full.is_file() {
            problems.push(Problem::new(path, format!("file `{}` does not exist or is not a file", full.display())));
        }
    }
}

impl Validate for AgentConfig {
    fn validate(&self, base: &Path) -> Vec<Problem> {
        let mut p = Vec::new();
        if !valid_id(&self.gateway) {
            p.push(Problem::new("gateway", format!("`{}` is not a valid id: use letters, digits, `-`, `_`, `.` or `:` (at most 128)", self.gateway)));
        }
        let u = &self.uplink;
        if !u.broker.tls && (u.ca_file.is_some() || u.cert_file.is_some()) {
            p.push(Problem::new("uplink.broker", "`ca_file` and `cert_file` need an mqtts:// broker"));
        }
        check_file(&mut p, base, "uplink.password_file", &u.password_file);
        check_file(&mut p, base, "uplink.ca_file", &u.ca_file);
        check_file(&mut p, base, "uplink.cert_file", &u.cert_file);
        check_file(&mut p, base, "uplink.key_file", &u.key_file);
        if u.cert_file.is_some() != u.key_file.is_some() {
            p.push(Problem::new("uplink.cert_file", "give both `cert_file` and `key_file` (the client certificate and its key), or neither"));
        }
        if let Some(f) = &u.batch_key_file {
            if let Err(e) = shared::auth::read_secret(&base.join(f)) {
                p.push(Problem::new("uplink.batch_key_file", e));
            }
        }
        if u.password_file.is_some() && u.username.is_none() {
            p.push(Problem::new("uplink.password_file", "a password needs `username` as well"));
        }
        if !(1..=10_000).contains(&u.batch_max) {
            p.push(Problem::new("uplink.batch_max", format!("{} is out of range 1..=10000", u.batch_max)));
        }
        if !(1..=64).contains(&u.max_inflight) {
            p.push(Problem::new("uplink.max_inflight", format!("{} is out of range 1..=64", u.max_inflight)));
        }
        if u.ack_timeout.0 < Duration::from_millis(100) {
            p.push(Problem::new("uplink.ack_timeout", "must be at least 100ms"));
        }
        if u.health_interval.0 < Duration::from_millis(100) {
            p.push(Problem::new("uplink.health_interval", "must be at least 100ms"));
        }
        let b = &self.buffer;
        if b.max_bytes.0 < 16 * 1024 {
            p.push(Problem::new("buffer.max_bytes", "must be at least 16KiB"));
        }
        if b.flush.0.is_zero() || b.flush.0 > Duration::from_secs(60) {
            p.push(Problem::new("buffer.flush", "must be between 1ms and 60s: it is the window in which a power cut can lose polled readings"));
        }
        if self.modbus.is_empty() && self.mqtt.is_empty() {
            p.push(Problem::new("", "no [[modbus]] or [[mqtt]] source: the agent would read nothing"));
        }
        let mut sensors: HashMap<&str, usize> = HashMap::new();
        // Devices on one serial line must agree on its settings and use distinct units.
        let mut lines: HashMap<String, (usize, crate::source::modbus::Serial)> = HashMap::new();
        let mut units: HashMap<(String, u8), usize> = HashMap::new();
        for (i, d) in self.modbus.iter().enumerate() {
            if let ModbusAddress::Rtu(serial) = &*d.address {
                match lines.get(&serial.path) {
                    Some((first, s)) if s != serial => p.push(Problem::new(
                        format!("modbus[{i}].address"),
                        format!("serial line {} is set up differently by modbus[{first}]: every device on one line shares baud, parity and stop bits", serial.path),
                    )),
                    Some(_) => {}
                    None => {
                        lines.insert(serial.path.clone(), (i, serial.clone()));
                    }
                }
                if let Some(first) = units.insert((serial.path.clone(), d.unit), i) {
                    p.push(Problem::new(format!("modbus[{i}].unit"), format!("unit {} on {} is already modbus[{first}]", d.unit, serial.path)));
                }
            }
            let path = format!("modbus[{i}]");
            if let Some(first) = sensors.insert(&d.sensor, i) {
                p.push(Problem::new(format!("{path}.sensor"), format!("`{}` is already used by modbus[{first}]", d.sensor)));
            }
            validate_device(d, &path, &mut p);
        }
        for (i, m) in self.mqtt.iter().enumerate() {
            validate_mqtt(m, &format!("mqtt[{i}]"), base, &mut p);
        }
        p
    }
}

fn validate_device(d: &ModbusDevice, path: &str, p: &mut Vec<Problem>) {
    if !valid_id(&d.sensor) {
        p.push(Problem::new(format!("{path}.sensor"), format!("`{}` is not a valid sensor id", d.sensor)));
    }
    if d.timeout.0.is_zero() {
        p.push(Problem::new(format!("{path}.timeout"), "must be more than 0"));
    }
    if d.interval.0 < d.timeout.0 {
        p.push(Problem::new(
            format!("{path}.interval"),
            format!("{} is shorter than timeout {}: a slow device would be polled again before it answered", humantime::format_duration(d.interval.0), humantime::format_duration(d.timeout.0)),
        ));
    }
    if d.retries > 10 {
        p.push(Problem::new(format!("{path}.retries"), "at most 10"));
    }
    if d.unit == 0 && !matches!(*d.address, ModbusAddress::Tcp(_)) {
        p.push(Problem::new(format!("{path}.unit"), "unit 0 is broadcast on a serial bus and gets no answer"));
    }
    if d.point.is_empty() {
        p.push(Problem::new(path, "has no [[modbus.point]]"));
    }
    let mut metrics: HashMap<&str, usize> = HashMap::new();
    // (table, first register, last register, point index) for overlap checks.
    let mut spans: Vec<(Table, u32, u32, usize)> = Vec::new();
    for (j, pt) in d.point.iter().enumerate() {
        let pp = format!("{path}.point[{j}]");
        if pt.metric.is_empty() || !valid_id(&pt.metric) {
            p.push(Problem::new(format!("{pp}.metric"), format!("`{}` is not a valid metric name", pt.metric)));
        }
        if let Some(first) = metrics.insert(&pt.metric, j) {
            p.push(Problem::new(format!("{pp}.metric"), format!("`{}` is already read by point[{first}] of this device", pt.metric)));
        }
        let bits = pt.table.is_bits();
        if bits && pt.data_type != DataType::Bool {
            p.push(Problem::new(format!("{pp}.type"), format!("table `{}` holds single bits: type must be \"bool\"", pt.table.name())));
        }
        if !bits && pt.data_type == DataType::Bool {
            p.push(Problem::new(format!("{pp}.type"), format!("\"bool\" needs table \"coil\" or \"discrete\", not `{}`", pt.table.name())));
        }
        if !pt.scale.is_finite() || pt.scale == 0.0 {
            p.push(Problem::new(format!("{pp}.scale"), "must be a finite number other than 0"));
        }
        if !pt.offset.is_finite() {
            p.push(Problem::new(format!("{pp}.offset"), "must be a finite number"));
        }
        let width = pt.data_type.registers() as u32;
        let first = pt.address as u32;
        let last = first + width - 1;
        if last > u16::MAX as u32 {
            p.push(Problem::new(
                format!("{pp}.address"),
                format!("{} at address {} needs registers {}..={}, past the last address 65535", pt.data_type.name(), first, first, last),
            ));
            continue;
        }
        for &(t, a, b, k) in &spans {
            if t == pt.table && first <= b && a <= last {
                p.push(Problem::new(
                    format!("{pp}.address"),
                    format!("registers {first}..={last} of table `{}` overlap point[{k}] ({}) at {a}..={b}", pt.table.name(), d.point[k].metric),
                ));
            }
        }
        spans.push((pt.table, first, last, j));
    }
}

fn validate_mqtt(m: &MqttSource, path: &str, base: &Path, p: &mut Vec<Problem>) {
    if m.broker.tls {
        p.push(Problem::new(format!("{path}.broker"), "mqtts:// (TLS) is not supported by this build yet"));
    }
    check_file(p, base, &format!("{path}.password_file"), &m.password_file);
    if let Err(e) = crate::source::mqtt::check_filter(&m.topic) {
        p.push(Problem::new(format!("{path}.topic"), e.to_string()));
    }
    match m.sensor {
        SensorFrom::TopicLevel(n) if n >= m.topic.split('/').count() => p.push(Problem::new(
            format!("{path}.sensor"),
            format!("topic level {n} does not exist in `{}` (levels count from 0)", m.topic),
        )),
        SensorFrom::TopicLevel(n) if m.topic.split('/').nth(n).is_some_and(|l| l != "+") => p.push(Problem::new(
            format!("{path}.sensor"),
            format!("topic level {n} of `{}` is fixed, not a `+` wildcard: every message would get the same id; use a literal id instead", m.topic),
        )),
        _ => {}
    }
    if m.fields.is_empty() {
        p.push(Problem::new(format!("{path}.fields"), "maps no metric: add e.g. `noise_laeq = \"laeq\"` under [mqtt.fields]"));
    }
    for (metric, json_path) in &m.fields {
        if !valid_id(metric) {
            p.push(Problem::new(format!("{path}.fields.{metric}"), format!("`{metric}` is not a valid metric name")));
        }
        if json_path.is_empty() {
            p.push(Problem::new(format!("{path}.fields.{metric}"), "empty JSON path; use \"$\" for a bare number payload"));
        }
    }
}
