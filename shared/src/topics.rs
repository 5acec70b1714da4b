//! MQTT topic names of contract v1. Every topic the code uses is built here.

pub const PREFIX: &str = "citysense/v1/";

pub fn up(gateway: &str) -> String {
    format!("{PREFIX}up/{gateway}")
}
pub fn ack(gateway: &str) -> String {
    format!("{PREFIX}ack/{gateway}")
}
pub fn state(gateway: &str) -> String {
    format!("{PREFIX}state/{gateway}")
}
pub fn health(gateway: &str) -> String {
    format!("{PREFIX}health/{gateway}")
}
pub fn alert(severity: &str, sensor: &str) -> String {
    format!("{PREFIX}alerts/{severity}/{sensor}")
}
pub fn live(sensor: &str, metric: &str) -> String {
    format!("{PREFIX}live/{sensor}/{metric}")
}

pub const UP_FILTER: &str = "citysense/v1/up/+";
pub const STATE_FILTER: &str = "citysense/v1/state/+";
pub const HEALTH_FILTER: &str = "citysense/v1/health/+";

/// The gateway named by a per-gateway topic of the given kind (`up`, `state`, ...).
pub fn gateway_of<'a>(topic: &'a str, kind: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix(kind)?.strip_prefix('/')?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// Whether an id can stand as one MQTT topic level and in file names and URLs.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_read_back_from_its_topic() {
        assert_eq!(gateway_of(&up("gw-river-01"), "up"), Some("gw-river-01"));
        assert_eq!(gateway_of(&ack("gw-1"), "up"), None);
        assert_eq!(gateway_of("citysense/v1/up/a/b", "up"), None);
        assert_eq!(gateway_of("citysense/v1/up/", "up"), None);
    }

    #[test]
    fn ids_that_would_break_topics_are_refused() {
        assert!(valid_id("aq-001"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a+"));
        assert!(!valid_id(""));
    }
}
