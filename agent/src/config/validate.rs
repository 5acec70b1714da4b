//! `check`: every problem a well-typed config can still have, each placed on
//! the key it is about (ranges, files that must exist, settings that contradict
//! each other, register overlaps). It exists apart from the structs because it
//! is most of the config's code and the part a technician's mistakes exercise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::config::{Problem, Validate};
use shared::topics::valid_id;

use super::{AgentConfig, ModbusDevice, MqttSource};
use crate::source::modbus::{DataType, ModbusAddress, Table};
use crate::source::mqtt::SensorFrom;

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
        SensorFrom::TopicLevel(n) if n >= m.topic.split('/').count() => {
            p.push(Problem::new(format!("{path}.sensor"), format!("topic level {n} does not exist in `{}` (levels count from 0)", m.topic)))
        }
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
