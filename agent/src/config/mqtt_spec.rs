//! What a `[[mqtt]]` source's text settings mean once parsed at load time:
//! where a message's sensor id and timestamp come from, and whether a topic
//! filter is one a broker accepts. Config values, so they live with the
//! config; the MQTT source only reads them.

use std::fmt;

use serde::Deserialize;
use shared::topics::valid_id;

/// A `[[mqtt]]` setting that does not parse: `sensor`, `timestamp` or `topic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("`{0}`: after `topic:` comes a level number counted from 0")]
    TopicLevel(String),
    #[error("`{0}`: after `json:` comes a dotted path")]
    JsonPath(String),
    #[error("`{0}` is neither `topic:N`, `json:PATH` nor a valid sensor id")]
    Sensor(String),
    #[error("`{0}`: write `json:PATH` (epoch ms, epoch s, or RFC 3339)")]
    Timestamp(String),
    #[error("empty topic filter")]
    EmptyFilter,
    #[error("`{0}`: `#` must be a whole level and the last one")]
    MultiLevel(String),
    #[error("`{0}`: `+` must be a whole level")]
    SingleLevel(String),
}

/// Where a message's sensor id comes from: `topic:N`, `json:PATH` or a literal id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum SensorFrom {
    TopicLevel(usize),
    Json(String),
    Literal(String),
}

impl SensorFrom {
    pub fn parse(s: &str) -> Result<SensorFrom, SpecError> {
        if let Some(n) = s.strip_prefix("topic:") {
            n.parse().map(SensorFrom::TopicLevel).map_err(|_| SpecError::TopicLevel(s.to_string()))
        } else if let Some(p) = s.strip_prefix("json:") {
            if p.is_empty() {
                Err(SpecError::JsonPath(s.to_string()))
            } else {
                Ok(SensorFrom::Json(p.to_string()))
            }
        } else if valid_id(s) {
            Ok(SensorFrom::Literal(s.to_string()))
        } else {
            Err(SpecError::Sensor(s.to_string()))
        }
    }
}

impl TryFrom<String> for SensorFrom {
    type Error = SpecError;
    fn try_from(s: String) -> Result<SensorFrom, SpecError> {
        SensorFrom::parse(&s)
    }
}

/// As written in the config.
impl fmt::Display for SensorFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SensorFrom::TopicLevel(n) => write!(f, "topic:{n}"),
            SensorFrom::Json(p) => write!(f, "json:{p}"),
            SensorFrom::Literal(id) => f.write_str(id),
        }
    }
}

/// Where a message's timestamp comes from; arrival time when absent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum TimestampFrom {
    Json(String),
}

impl TimestampFrom {
    pub fn parse(s: &str) -> Result<TimestampFrom, SpecError> {
        match s.strip_prefix("json:") {
            Some(p) if !p.is_empty() => Ok(TimestampFrom::Json(p.to_string())),
            _ => Err(SpecError::Timestamp(s.to_string())),
        }
    }
}

impl TryFrom<String> for TimestampFrom {
    type Error = SpecError;
    fn try_from(s: String) -> Result<TimestampFrom, SpecError> {
        TimestampFrom::parse(&s)
    }
}

/// Checks a subscription filter the way a broker would.
pub fn check_filter(filter: &str) -> Result<(), SpecError> {
    if filter.is_empty() {
        return Err(SpecError::EmptyFilter);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return Err(SpecError::MultiLevel(filter.to_string()));
        }
        if l.contains('+') && *l != "+" {
            return Err(SpecError::SingleLevel(filter.to_string()));
        }
    }
    Ok(())
}
