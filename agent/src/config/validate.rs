//! `check`: every problem a well-typed config can still have, each placed on
//! the key it is about (ranges, files that must exist, settings that contradict
//! each other, register overlaps). It exists apart from the structs because it
//! is most of the config's code and the part a technician's mistakes exercise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::config::{Problem, Validate};
use shared::topics::valid_id;

use super::mqtt_spec::SensorFrom;
use super::{AgentConfig, ModbusDevice, MqttSource};
use crate::source::modbus::ModbusAddress;

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
        if !u.broker.any_tls() && (u.ca_file.is_some() || u.cert_file.is_some()) {
            p.push(Problem::new("uplink.broker", "`ca_file` and `cert_file` need an mqtts:// broker"));
        }
        if u.broker.any_tls() {
            for (i, b) in u.broker.0.iter().enumerate().filter(|(_, b)| !b.tls) {
                p.push(Problem::new(
                    format!("uplink.broker[{i}]"),
                    format!("`{b}` is plain mqtt:// beside mqtts:// brokers: a failover would send this gateway's batches and password unencrypted"),
                ));
            }
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
                p.push(Problem::new("uplink.batch_key_file", e.to_string()));
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
            p.push(Problem::new("buffer.flush", "must be between 1ms and 60s: it is the longest gap between fsyncs of the outbox"));
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

/// The rates serial adapters and Modbus devices are built for.
const STANDARD_BAUDS: [u32; 16] = [300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 76800, 115200, 230400, 460800, 921600];

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
            format!(
                "{} is shorter than timeout {}: a slow device would be polled again before it answered",
                humantime::format_duration(d.interval.0),
                humantime::format_duration(d.timeout.0)
            ),
        ));
    }
    if d.retries > 10 {
        p.push(Problem::new(format!("{path}.retries"), "at most 10"));
    }
    if let ModbusAddress::Rtu(serial) = &*d.address {
        if d.unit == 0 {
            p.push(Problem::new(format!("{path}.unit"), "unit 0 is broadcast on a serial bus and gets no answer"));
        }
        if d.unit >= 248 {
            p.push(Problem::new(format!("{path}.unit"), format!("unit {} is reserved on a serial bus (devices use 1..=247): set the device's address to 1..=247", d.unit)));
        }
        if !STANDARD_BAUDS.contains(&serial.baud) {
            let near = STANDARD_BAUDS.iter().min_by_key(|b| (**b as i64 - serial.baud as i64).abs()).expect("a list");
            p.push(Problem::new(
                format!("{path}.address"),
                format!("baud {} is not a standard rate (did you mean {near}?): serial adapters round odd rates and the device never answers", serial.baud),
            ));
        }
    }
    if d.point.is_empty() {
        p.push(Problem::new(path, "has no [[modbus.point]]"));
    }
    super::check_points::validate_points(&d.point, path, p);
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
        SensorFrom::TopicLevel(n) if n >= m.topic.split('/').count() => {
            p.push(Problem::new(format!("{path}.sensor"), format!("topic level {n} does not exist in `{}` (levels count from 0)", m.topic)))
        }
        SensorFrom::TopicLevel(n) if m.topic.split('/').nth(n).is_some_and(|l| l != "+") => p.push(Problem::new(
            format!("{path}.sensor"),
            format!("topic level {n} of `{}` is fixed, not a `+` wildcard: every message would get the same id; use a literal id instead", m.topic),
        )),
        _ => {}
    }
    if let SensorFrom::Literal(id) = &m.sensor {
        if let Some(level) = m.topic.split('/').position(|l| l == "+") {
            p.push(Problem::new(
                format!("{path}.sensor"),
                format!(
                    "`{id}` is a literal sensor id, but topic `{}` matches many sensors: every message would be stored as sensor `{id}`. Write \"json:{id}\" to take the id from the payload's `{id}` field, or \"topic:{level}\" to take it from the topic",
                    m.topic
                ),
            ));
        }
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

impl AgentConfig {
    /// What `check` accepts but a technician should hear about: printed as
    /// `FILE:LINE: path: warning: …`, exit 0.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut w = Vec::new();
        let listen = *self.status.listen;
        if !listen.ip().is_loopback() {
            w.push(Problem::new(
                "status.listen",
                format!("{listen} serves /status and /metrics to the network without authentication; use 127.0.0.1:{} unless a firewall limits who reaches it", listen.port()),
            ));
        }
        for (i, m) in self.mqtt.iter().enumerate() {
            if let SensorFrom::Literal(id) = &m.sensor {
                if m.topic.ends_with('#') && !m.topic.contains('+') {
                    w.push(Problem::new(
                        format!("mqtt[{i}].sensor"),
                        format!("every message under `{}` is stored as sensor `{id}`; if several sensors publish there, use \"json:PATH\" or \"topic:N\"", m.topic),
                    ));
                }
            }
        }
        w
    }
}
