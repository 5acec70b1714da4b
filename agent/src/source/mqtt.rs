//! MQTT sources: sensors that publish JSON (or a bare number) themselves. Each
//! message is mapped to readings by the `[[mqtt]]` table; a message that does
//! not fit is counted and logged, never fatal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;

use super::timestamp::{parse_rfc3339, TimeError, Zoneless};
use crate::config::MqttSource;
use crate::source::{NewReading, Sink};
use crate::stats::DeviceStats;
use shared::clock::SharedClock;
use shared::topics::valid_id;
use shared::Quality;

pub use crate::config::mqtt_spec::{check_filter, SensorFrom, SpecError, TimestampFrom};

/// Why one message carries no readings; every variant names the topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{topic}: payload is not UTF-8")]
    NotUtf8 { topic: String },
    #[error("{topic}: payload is not JSON or a number: {detail}")]
    NotJson { topic: String, detail: String },
    #[error("{topic}: has no level {level}")]
    NoLevel { topic: String, level: usize },
    #[error("{topic}: no sensor id at `{path}`")]
    NoSensorId { topic: String, path: String },
    #[error("{topic}: `{sensor}` is not a valid sensor id")]
    BadSensorId { topic: String, sensor: String },
    #[error("{topic}: no usable timestamp at `{path}`")]
    NoTimestamp { topic: String, path: String },
    #[error("{topic}: timestamp at `{path}`: {error}")]
    BadTime { topic: String, path: String, error: TimeError },
    #[error("{topic}: no numeric value at {paths}")]
    NoValue { topic: String, paths: String },
}

/// The mapping of one `[[mqtt]]` table, apart from the connection.
#[derive(Debug, Clone)]
pub struct MessageMap {
    pub sensor: SensorFrom,
    pub timestamp: Option<TimestampFrom>,
    pub zoneless: Zoneless,
    pub fields: BTreeMap<String, String>,
}

impl From<&MqttSource> for MessageMap {
    fn from(c: &MqttSource) -> MessageMap {
        MessageMap { sensor: c.sensor.clone(), timestamp: c.timestamp.clone(), zoneless: c.timestamp_zone, fields: c.fields.clone() }
    }
}

impl MessageMap {
    /// The readings one message carries, or why it carries none.
    pub fn map(&self, topic: &str, payload: &[u8], arrival_ms: i64) -> Result<Vec<NewReading>, MapError> {
        let t = || topic.to_string();
        let text = std::str::from_utf8(payload).map_err(|_| MapError::NotUtf8 { topic: t() })?;
        let json: Value = serde_json::from_str(text.trim()).map_err(|e| MapError::NotJson { topic: t(), detail: e.to_string() })?;
        let sensor = match &self.sensor {
            SensorFrom::Literal(s) => s.clone(),
            SensorFrom::TopicLevel(n) => topic.split('/').nth(*n).map(str::to_string).ok_or_else(|| MapError::NoLevel { topic: t(), level: *n })?,
            SensorFrom::Json(p) => match lookup(&json, p) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(MapError::NoSensorId { topic: t(), path: p.clone() }),
            },
        };
        if !valid_id(&sensor) {
            return Err(MapError::BadSensorId { topic: t(), sensor });
        }
        let ts_ms = match &self.timestamp {
            None => arrival_ms,
            Some(TimestampFrom::Json(p)) => match lookup(&json, p) {
                Some(Value::String(s)) => parse_rfc3339(s.trim(), self.zoneless).map_err(|error| MapError::BadTime { topic: t(), path: p.clone(), error })?,
                v => parse_epoch(v).ok_or_else(|| MapError::NoTimestamp { topic: t(), path: p.clone() })?,
            },
        };
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for (metric, path) in &self.fields {
            match lookup(&json, path).and_then(number) {
                Some(value) if value.is_finite() => out.push(NewReading { sensor: sensor.clone(), metric: metric.clone(), ts_ms, value, quality: Quality::Good }),
                _ => missing.push(path.as_str()),
            }
        }
        if out.is_empty() {
            return Err(MapError::NoValue { topic: t(), paths: missing.join(", ") });
        }
        Ok(out)
    }
}

fn lookup<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    if path == "$" {
        return Some(json);
    }
    path.split('.').try_fold(json, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Epoch milliseconds from epoch ms or epoch seconds (values below 10^11).
fn parse_epoch(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => {
            let f = n.as_f64()?;
            Some(if f.abs() < 1e11 { (f * 1000.0) as i64 } else { f as i64 })
        }
        _ => None,
    }
}

/// The broker connection of a source, under `client_id` (the running agent
/// and `citysense-agent test` use different ones, so a test does not take the
/// running agent's session over).
pub fn options(source: &MqttSource, client_id: String) -> MqttOptions {
    let url = &*source.broker;
    let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(user) = &source.username {
        let password = source.password_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
        opts.set_credentials(user.clone(), password.trim().to_string());
    }
    opts
}

/// Subscribes and maps messages until `shutdown`. Reconnects with backoff; the
/// subscription is made again on every connection. A message without a
/// timestamp is stamped on arrival by `clock` (the agent's).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    index: usize,
    gateway: String,
    source: MqttSource,
    stats: Arc<DeviceStats>,
    clock: SharedClock,
    sink: Sink,
    paused: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let map = MessageMap::from(&source);
    let url = &*source.broker;
    let (client, mut eventloop) = AsyncClient::new(options(&source, format!("citysense-{gateway}-src{index}")), 64);
    let mut backoff = Duration::from_millis(250);
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shutdown.changed() => { let _ = client.disconnect().await; return; }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                stats.up(clock.now_ms());
                tracing::info!(broker = %url, topic = %source.topic, "mqtt[{index}] connected");
                if let Err(e) = client.subscribe(source.topic.clone(), QoS::AtLeastOnce).await {
                    tracing::error!("mqtt[{index}]: cannot subscribe to {}: {e}", source.topic);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if *paused.borrow() {
                    continue;
                }
                let arrival = clock.now_ms();
                match map.map(&p.topic, &p.payload, arrival) {
                    Ok(readings) => {
                        // Counted once durable (or refused under stop_polling).
                        let taken = tokio::select! {
                            t = sink.take(readings) => t,
                            _ = shutdown.changed() => None,
                        };
                        if taken.is_none() {
                            let _ = client.disconnect().await;
                            return;
                        }
                        stats.ok(arrival);
                    }
                    Err(e) => {
                        tracing::warn!("mqtt[{index}]: {e}");
                        stats.error(e.to_string(), arrival);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(broker = %url, "mqtt[{index}]: {e}; reconnecting in {backoff:?}");
                let now = clock.now_ms();
                stats.error(format!("broker {url}: {e}"), now);
                stats.down(now);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(sensor: &str, ts: Option<&str>, fields: &[(&str, &str)]) -> MessageMap {
        MessageMap {
            sensor: SensorFrom::parse(sensor).unwrap(),
            timestamp: ts.map(|t| TimestampFrom::parse(t).unwrap()),
            zoneless: Zoneless::Reject,
            fields: fields.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        }
    }

    #[test]
    fn json_fields_become_readings_with_sensor_from_topic() {
        let m = map("topic:2", Some("json:ts"), &[("noise_laeq", "laeq"), ("noise_lmax", "stats.max")]);
        let r = m.map("sensors/noise/ns-07", br#"{"laeq": 61.5, "ts": 1700000000123, "stats": {"max": 80}}"#, 5).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].sensor, "ns-07");
        assert_eq!(r[0].ts_ms, 1_700_000_000_123);
        assert_eq!(r.iter().find(|x| x.metric == "noise_laeq").unwrap().value, 61.5);
        assert_eq!(r.iter().find(|x| x.metric == "noise_lmax").unwrap().value, 80.0);
    }

    #[test]
    fn bare_number_and_seconds_timestamps_and_json_sensor() {
        let m = map("lamp-3", None, &[("lux", "$")]);
        let r = m.map("t", b" 412.5 ", 77).unwrap();
        assert_eq!((r[0].sensor.as_str(), r[0].value, r[0].ts_ms), ("lamp-3", 412.5, 77));
        let m = map("json:id", Some("json:t"), &[("v", "v")]);
        let r = m.map("t", br#"{"id":"w-1","t":1700000000,"v":"3.5"}"#, 0).unwrap();
        assert_eq!((r[0].sensor.as_str(), r[0].ts_ms, r[0].value), ("w-1", 1_700_000_000_000, 3.5));
        let r = m.map("t", br#"{"id":"w-1","t":"2023-11-14T22:13:20Z","v":1}"#, 0).unwrap();
        assert_eq!(r[0].ts_ms, 1_700_000_000_000);
        let r = m.map("t", br#"{"id":"w-1","t":"2023-11-15T06:13:20+08:00","v":1}"#, 0).unwrap();
        assert_eq!(r[0].ts_ms, 1_700_000_000_000);
        let e = m.map("t", br#"{"id":"w-1","t":"2023-11-15T06:13:20","v":1}"#, 0).unwrap_err();
        assert!(e.to_string().contains("timestamp_zone"), "{e}");
    }

    #[test]
    fn payloads_that_do_not_fit_say_why() {
        let m = map("topic:2", None, &[("noise_laeq", "laeq")]);
        assert!(m.map("a/b/c", b"not json", 0).unwrap_err().to_string().contains("not JSON"));
        assert!(m.map("a/b/c", br#"{"other": 1}"#, 0).unwrap_err().to_string().contains("no numeric value at laeq"));
        assert!(m.map("a/b/c", &[0xff, 0xfe], 0).unwrap_err().to_string().contains("UTF-8"));
        assert!(m.map("a/b", br#"{"laeq": 1}"#, 0).unwrap_err().to_string().contains("no level 2"));
        assert!(m.map("a/b/c+d", br#"{"laeq": 1}"#, 0).unwrap_err().to_string().contains("not a valid sensor id"));
    }

    #[test]
    fn filters_are_checked_like_a_broker_would() {
        assert!(check_filter("sensors/noise/+").is_ok());
        assert!(check_filter("sensors/#").is_ok());
        assert!(check_filter("sensors/#/x").is_err());
        assert!(check_filter("sensors/no+se").is_err());
    }
}
