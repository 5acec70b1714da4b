//! The rule kinds judged per gateway: `gateway_offline` (its last will, or
//! silence) and `clock_skew` (its clock's offset, measured on each batch). An
//! alert of either names the gateway as its `sensor`, with metric `""`.

use shared::GatewayId;

use super::{Changes, Engine, GatewaySeen, Key};
use crate::rules::rule::{glob, Kind, Rule};

impl Engine {
    pub(super) fn gateway_heard(&mut self, gateway: &str, now: i64, out: &mut Changes) {
        let g = self.gateways.entry(gateway.into()).or_default();
        g.last_ms = now;
        g.offline_since = None;
        // Kept for any gateway, so a collector given its partition knows it;
        // its alerts are its holder's to close.
        if !self.answers_for_gateway(gateway) {
            return;
        }
        let keys: Vec<Key> = self.open.keys().filter(|k| k.1 == gateway && self.is_offline_rule(&k.0)).cloned().collect();
        for k in keys {
            out.extend(self.close(&k, now, None));
        }
    }

    /// Hearing from a gateway ends its offline alerts, not its clock alerts.
    fn is_offline_rule(&self, id: &str) -> bool {
        self.rules.iter().any(|r| r.id == id && r.kind == Kind::GatewayOffline)
    }

    fn gateway_selected(rule: &Rule, gateway: &str) -> bool {
        rule.select.gateway.as_deref().is_none_or(|p| glob(p, gateway))
    }

    /// A gateway's `state/{gateway}` message (its last will says offline).
    pub fn on_gateway_state(&mut self, gateway: &str, online: bool, now: i64) -> Changes {
        let mut out = Vec::new();
        if online {
            self.gateway_heard(gateway, now, &mut out);
        } else {
            let g = self.gateways.entry(gateway.into()).or_default();
            g.offline_since.get_or_insert(now);
            out.extend(self.tick(now));
        }
        out
    }

    /// Any message from a gateway other than readings (health) proves it alive.
    pub fn on_gateway_heard(&mut self, gateway: &str, now: i64) -> Changes {
        let mut out = Vec::new();
        self.gateway_heard(gateway, now, &mut out);
        out
    }

    /// A gateway's clock offset (collector time minus its clock), measured on
    /// one of its batches: a `clock_skew` rule fires while |offset| exceeds its
    /// limit and clears at the first batch within it. The alert's `value` and
    /// `threshold` are in seconds, like the rule's `value`.
    pub fn on_gateway_clock(&mut self, gateway: &str, offset_ms: i64, now: i64) -> Changes {
        let mut out = Vec::new();
        let rules: Vec<Rule> = self.rules.iter().filter(|r| r.kind == Kind::ClockSkew && Self::gateway_selected(r, gateway)).cloned().collect();
        let offset_s = offset_ms as f64 / 1000.0;
        for rule in rules {
            let limit_s = rule.value.unwrap_or(self.max_offset_ms as f64 / 1000.0);
            let key: Key = (rule.id.clone(), gateway.to_string(), String::new());
            match (offset_s.abs() > limit_s, self.open.contains_key(&key)) {
                (true, false) => {
                    let (change, mut alert) = self.fire(&rule, gateway, "", Some(offset_s), now);
                    // Without a `value` of its own the rule's limit is the policy's.
                    alert.threshold = Some(limit_s);
                    self.alerts.insert(alert.id, alert.clone());
                    out.push((change, alert));
                }
                (true, true) => self.touch(&key, offset_s, now),
                (false, true) => out.extend(self.close(&key, now, None)),
                (false, false) => {}
            }
        }
        out
    }

    pub(super) fn offline(&mut self, rule: &Rule, now: i64, out: &mut Changes) {
        let silence = rule.for_duration().map(|d| d.as_millis() as i64);
        let gws: Vec<(GatewayId, GatewaySeen)> = self.gateways.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (gw, g) in gws {
            if !Self::gateway_selected(rule, &gw) || !self.answers_for_gateway(&gw) {
                continue;
            }
            let down = g.offline_since.is_some() || silence.is_some_and(|s| now - g.last_ms >= s);
            let key: Key = (rule.id.clone(), gw.to_string(), String::new());
            if down && !self.open.contains_key(&key) {
                out.push(self.fire(rule, &gw, "", None, now));
            }
        }
    }
}
