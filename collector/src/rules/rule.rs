//! `Rule`: what to watch for. The same fields arrive as JSON over the API and
//! as `[[rule]]` tables in the collector config; both are checked by `validate`,
//! whose messages name the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::topics::valid_id;

use crate::alert::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Threshold,
    Rate,
    Stale,
    GatewayOffline,
    /// A gateway's clock offset beyond `value` seconds (default `[ingest.clock] max_offset`).
    ClockSkew,
}

impl Kind {
    /// Kinds judged per gateway rather than per reading.
    pub fn is_gateway(self) -> bool {
        matches!(self, Kind::GatewayOffline | Kind::ClockSkew)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    pub fn holds(self, v: f64, limit: f64) -> bool {
        match self {
            Op::Gt => v > limit,
            Op::Ge => v >= limit,
            Op::Lt => v < limit,
            Op::Le => v <= limit,
        }
    }
    fn upward(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }
}

/// Which sensors a rule watches; an omitted selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// Sensor id pattern: `*` matches any run of characters (`aq-*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Threshold: the value the reading must get back past to clear (hysteresis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    /// Threshold: how long the condition must hold; stale: the silence;
    /// gateway_offline: the silence that counts as offline.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    pub severity: Severity,
    #[serde(default)]
    pub select: Select,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after: Option<String>,
    /// The department its incidents go to, instead of the sensor's owner (`crate::incident`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

/// `*` wildcard match (any run of characters), the only pattern technicians need.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn duration(field: &str, s: &Option<String>, problems: &mut Vec<(String, String)>) -> Option<Duration> {
    let s = s.as_ref()?;
    match humantime::parse_duration(s) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push((field.into(), format!("`{s}` is not a duration ({e}); write e.g. \"30s\", \"10m\"")));
            None
        }
    }
}

impl Rule {
    pub fn for_duration(&self) -> Option<Duration> {
        self.for_.as_deref().and_then(|s| humantime::parse_duration(s).ok())
    }

    pub fn escalate_duration(&self) -> Option<Duration> {
        self.escalate_after.as_deref().and_then(|s| humantime::parse_duration(s).ok())
    }

    /// Every problem as (field, message); empty when the rule is usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut need = |field: &str, present: bool, what: &str| {
            if !present {
                p.push((field.into(), format!("is required for kind {what}")));
            }
        };
        let kind = match self.kind {
            Kind::Threshold => "threshold",
            Kind::Rate => "rate",
            Kind::Stale => "stale",
            Kind::GatewayOffline => "gateway_offline",
            Kind::ClockSkew => "clock_skew",
        };
        match self.kind {
            Kind::Threshold => {
                need("metric", self.metric.is_some(), kind);
                need("op", self.op.is_some(), kind);
                need("value", self.value.is_some(), kind);
            }
            Kind::Rate => {
                need("metric", self.metric.is_some(), kind);
                need("value", self.value.is_some(), kind);
            }
            Kind::Stale => need("for", self.for_.is_some(), kind),
            Kind::GatewayOffline | Kind::ClockSkew => {}
        }
        if !valid_id(&self.id) {
            p.push(("id".into(), format!("`{}` is not a valid id: letters, digits, - _ . :", self.id)));
        }
        if let Some(v) = self.value {
            if !v.is_finite() {
                p.push(("value".into(), "must be a finite number".into()));
            }
            if self.kind == Kind::Rate && v <= 0.0 {
                p.push(("value".into(), "a rate limit (change per minute) must be positive".into()));
            }
            if self.kind == Kind::ClockSkew && v <= 0.0 {
                p.push(("value".into(), "a clock offset limit (seconds) must be positive".into()));
            }
        }
        if let (Some(c), Some(v), Some(op)) = (self.clear, self.value, self.op) {
            let wrong_side = if op.upward() { c > v } else { c < v };
            if wrong_side {
                p.push(("clear".into(), format!("{c} is on the firing side of {v}: the alert could never clear")));
            }
        }
        if self.clear.is_some() && self.kind != Kind::Threshold {
            p.push(("clear".into(), "only threshold rules have a clear value".into()));
        }
        if self.op.is_some() && self.kind != Kind::Threshold {
            p.push(("op".into(), "only threshold rules have an operator".into()));
        }
        if self.select.gateway.is_some() && !self.kind.is_gateway() {
            p.push(("select.gateway".into(), "only gateway_offline and clock_skew rules select by gateway".into()));
        }
        if self.for_.is_some() && self.kind == Kind::ClockSkew {
            p.push(("for".into(), "a clock_skew rule is judged on each batch's offset; it has no `for`".into()));
        }
        if let Some(m) = &self.metric {
            if !valid_id(m) {
                p.push(("metric".into(), format!("`{m}` is not a valid metric name")));
            }
        }
        let f = duration("for", &self.for_, &mut p);
        if self.kind == Kind::Stale && f.is_some_and(|d| d < Duration::from_millis(100)) {
            p.push(("for".into(), "a stale rule needs at least 100ms".into()));
        }
        duration("escalate_after", &self.escalate_after, &mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_contract_example_is_valid() {
        let r = rule(
            r#"{"id": "pm25-high", "kind": "threshold", "metric": "pm25", "op": ">", "value": 75, "clear": 60,
            "for": "10m", "severity": "warning", "select": {"sensor": "aq-*", "kind": "air_quality", "district": "Xihu"},
            "escalate_after": "15m"}"#,
        );
        assert!(r.validate().is_empty(), "{:?}", r.validate());
        assert_eq!(r.for_duration(), Some(Duration::from_secs(600)));
    }

    #[test]
    fn problems_name_their_field() {
        let r = rule(r#"{"id": "x", "kind": "threshold", "metric": "pm25", "value": 75, "clear": 80, "severity": "info", "for": "soon"}"#);
        let fields: Vec<String> = r.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec!["op", "for"]);
        let r = rule(r#"{"id": "x", "kind": "threshold", "metric": "pm25", "op": ">", "value": 75, "clear": 80, "severity": "info"}"#);
        assert_eq!(r.validate()[0].0, "clear");
        assert!(serde_json::from_str::<Rule>(r#"{"id": "x", "kind": "threshold", "severity": "loud"}"#).is_err());
        assert!(serde_json::from_str::<Rule>(r#"{"id": "x", "kind": "teleport", "severity": "info"}"#).is_err());
    }

    #[test]
    fn a_clock_skew_rule_needs_nothing_but_refuses_a_bad_limit_and_a_duration() {
        assert!(rule(r#"{"id": "clk", "kind": "clock_skew", "severity": "warning", "select": {"gateway": "gw-*"}}"#).validate().is_empty());
        assert!(rule(r#"{"id": "clk", "kind": "clock_skew", "value": 30, "severity": "warning"}"#).validate().is_empty());
        let fields = |json: &str| rule(json).validate().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(fields(r#"{"id": "clk", "kind": "clock_skew", "value": 0, "for": "1m", "severity": "warning"}"#), ["value", "for"]);
        assert_eq!(fields(r#"{"id": "t", "kind": "threshold", "metric": "m", "op": ">", "value": 1, "severity": "info", "select": {"gateway": "g"}}"#), ["select.gateway"]);
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("aq-*", "aq-001"));
        assert!(!glob("aq-*", "tr-001"));
        assert!(glob("*-00*", "wl-003"));
        assert!(glob("aq-001", "aq-001"));
        assert!(!glob("aq-0*1", "aq-002"));
    }
}
