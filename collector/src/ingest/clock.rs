//! Gateway clocks: measured, and not trusted blindly.
//!
//! A gateway stamps readings with its own clock. A real-time clock that reset
//! before NTP (1970) or jumped (2100) would put readings into retention's
//! deletion window, or make them a sensor's "latest" for decades. So each
//! batch's receive time is compared with the agent's send time (`sent_ms`,
//! Batch v2): that is the gateway's clock offset (plus the transit time). A
//! reading whose time is implausible — further ahead than `future_tolerance`,
//! before its sensor's `installed` date, or older than its raw retention —
//! is
//! - kept at its device time with quality `uncertain` when the gateway's
//!   offset is within `max_offset` (the clock is fine; the reading is odd:
//!   long buffered, or the device's own clock), or else
//! - moved onto the collector's time line (device time + offset, or the
//!   receive time when that is still implausible), quality `uncertain`, and
//!   counted as `clock_skew`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::config::{HumanDuration, Problem};
use shared::{Quality, Reading, SensorId};

use crate::catalogue::SensorEntry;
use crate::store::lifecycle::Policy;

/// `[ingest.clock]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// How far ahead of the collector's clock a reading may be stamped.
    #[serde(default = "default_future_tolerance")]
    pub future_tolerance: HumanDuration,
    /// A gateway whose |offset| is within this has a sound clock; beyond it
    /// its implausible readings are moved to the collector's time, and a
    /// `clock_skew` rule without a `value` fires.
    #[serde(default = "default_max_offset")]
    pub max_offset: HumanDuration,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig { future_tolerance: default_future_tolerance(), max_offset: default_max_offset() }
    }
}

fn default_future_tolerance() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}

fn default_max_offset() -> HumanDuration {
    HumanDuration(Duration::from_secs(2 * 60))
}

fn ms(d: HumanDuration) -> i64 {
    d.0.as_millis().min(i64::MAX as u128) as i64
}

impl ClockConfig {
    pub fn validate(&self, p: &mut Vec<Problem>) {
        if self.future_tolerance.0 < Duration::from_secs(1) {
            p.push(Problem::new("ingest.clock.future_tolerance", "must be at least 1s (readings cross the network)"));
        }
        if self.max_offset.0 < Duration::from_secs(1) {
            p.push(Problem::new("ingest.clock.max_offset", "must be at least 1s (the offset includes the transit time)"));
        }
    }

    /// For `check`.
    pub fn summary(&self) -> String {
        format!(
            "clocks: readings more than {} ahead, before their sensor's install date or older than raw retention are kept at device time (uncertain) when their gateway's offset is within {}, else moved to the collector's time (uncertain, counted clock_skew)",
            humantime::format_duration(self.future_tolerance.0),
            humantime::format_duration(self.max_offset.0)
        )
    }
}

/// What the policy did to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Plausible: untouched.
    Kept,
    /// Implausible, the gateway's clock sound: device time, quality `uncertain`.
    Uncertain,
    /// Implausible, the gateway's clock off: moved to the collector's time.
    Moved,
}

pub struct ClockPolicy {
    future_ms: i64,
    max_offset_ms: i64,
    installed: HashMap<SensorId, i64>,
    retention: Option<Arc<Policy>>,
}

/// Midnight UTC of a `YYYY-MM-DD` date.
fn date_ms(date: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    })
}

impl ClockPolicy {
    /// `retention`: the raw retention per series, when the store keeps series.
    pub fn new(config: &ClockConfig, catalogue: &[SensorEntry], retention: Option<Arc<Policy>>) -> ClockPolicy {
        let installed = catalogue.iter().filter_map(|e| Some((e.id.clone(), date_ms(e.installed.as_deref()?)?))).collect();
        ClockPolicy { future_ms: ms(config.future_tolerance), max_offset_ms: ms(config.max_offset), installed, retention }
    }

    /// Whether `offset_ms` is beyond what a sound clock shows.
    pub fn skewed(&self, offset_ms: i64) -> bool {
        offset_ms.saturating_abs() > self.max_offset_ms
    }

    fn plausible(&self, now: i64, r: &Reading, ts: i64) -> bool {
        if ts > now.saturating_add(self.future_ms) {
            return false;
        }
        if self.installed.get(&r.sensor).is_some_and(|i| ts < *i) {
            return false;
        }
        let raw = self.retention.as_ref().and_then(|p| p.keep(&r.sensor, &r.metric).raw_ms);
        raw.is_none_or(|keep| ts >= now.saturating_sub(keep))
    }

    /// Applies the policy to `r`, received at `now` from a gateway whose
    /// clock is `offset_ms` behind the collector's (None: unknown, a v1 batch).
    pub fn apply(&self, now: i64, offset_ms: Option<i64>, r: &mut Reading) -> Fix {
        if self.plausible(now, r, r.ts_ms) {
            return Fix::Kept;
        }
        if r.quality == Quality::Good {
            r.quality = Quality::Uncertain;
        }
        if offset_ms.is_some_and(|o| !self.skewed(o)) {
            return Fix::Uncertain;
        }
        let shifted = offset_ms.map(|o| r.ts_ms.saturating_add(o)).filter(|t| self.plausible(now, r, *t));
        r.ts_ms = shifted.unwrap_or(now);
        Fix::Moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Seq;

    const NOW: i64 = 1_750_000_000_000;

    fn r(ts_ms: i64) -> Reading {
        Reading { seq: Seq(1), sensor: "wl-1".into(), metric: "m".into(), ts_ms, value: 1.0, quality: Quality::Good }
    }

    fn policy() -> ClockPolicy {
        let mut e: SensorEntry = toml::from_str("id = \"wl-1\"\nkind = \"k\"\ninstalled = \"2024-01-01\"").unwrap();
        e.gateway = None;
        ClockPolicy::new(&ClockConfig::default(), &[e], None)
    }

    #[test]
    fn plausible_readings_are_untouched_and_others_follow_the_offset() {
        let p = policy();
        let mut ok = r(NOW - 1_000);
        assert_eq!((p.apply(NOW, Some(50), &mut ok), ok.quality), (Fix::Kept, Quality::Good));
        // A sound clock, a reading from before the install date: kept, flagged.
        let mut old = r(date_ms("2023-06-01").unwrap());
        assert_eq!((p.apply(NOW, Some(50), &mut old), old.ts_ms, old.quality), (Fix::Uncertain, date_ms("2023-06-01").unwrap(), Quality::Uncertain));
        // A clock in 1970: the reading moves by the offset, onto the collector's time.
        let sent = 5_000;
        let mut y1970 = r(4_000);
        assert_eq!((p.apply(NOW, Some(NOW - sent), &mut y1970), y1970.ts_ms), (Fix::Moved, NOW - 1_000));
        // 2100, and an unknown offset: the receive time.
        let mut y2100 = r(4_102_444_800_000);
        assert_eq!((p.apply(NOW, None, &mut y2100), y2100.ts_ms), (Fix::Moved, NOW));
        assert!(p.skewed(-121_000) && !p.skewed(119_000));
        assert_eq!(date_ms("1970-01-02"), Some(86_400_000));
    }
}
