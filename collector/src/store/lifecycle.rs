//! The data lifecycle after ingest: which retention applies to a series, and
//! the task that deletes what has outlived it. Time is passed in, so tests
//! drive years of it in a moment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use shared::clock::SharedClock;
use shared::SensorId;
use tokio::sync::watch;

use crate::catalogue::SensorEntry;
use crate::store::settings::{KeepConfig, Lifetime, RetentionRule};
use crate::store::{Keep, Store};

pub struct Policy {
    default: KeepConfig,
    rules: Vec<RetentionRule>,
    kinds: HashMap<SensorId, String>,
}

fn ms(l: Lifetime) -> Option<i64> {
    l.0.map(|d| d.as_millis().min(i64::MAX as u128) as i64)
}

impl Policy {
    pub fn new(default: KeepConfig, rules: Vec<RetentionRule>, catalogue: &[SensorEntry]) -> Policy {
        Policy { default, rules, kinds: catalogue.iter().map(|e| (e.id.clone(), e.kind.clone())).collect() }
    }

    /// The shortest time any series keeps its raw samples (None: forever).
    pub fn shortest_raw_ms(&self) -> Option<i64> {
        std::iter::once(self.default.raw).chain(self.rules.iter().filter_map(|r| r.raw)).filter_map(ms).min()
    }

    pub fn keep(&self, sensor: &str, metric: &str) -> Keep {
        let kind = self.kinds.get(sensor);
        let rule = self.rules.iter().find(|r| r.kind.as_ref().is_none_or(|k| Some(k) == kind) && r.metric.as_ref().is_none_or(|m| m == metric));
        let d = &self.default;
        Keep {
            raw_ms: ms(rule.and_then(|r| r.raw).unwrap_or(d.raw)),
            minute_ms: ms(rule.and_then(|r| r.minute).unwrap_or(d.minute)),
            hour_ms: ms(rule.and_then(|r| r.hour).unwrap_or(d.hour)),
        }
    }
}

#[derive(Default)]
pub struct LifecycleStats {
    pub expired_samples: AtomicU64,
    pub expired_rollups: AtomicU64,
    /// Time spent in upkeep passes (rollups, packing, retention), in µs:
    /// work that shares the machine with ingest.
    pub upkeep_us: AtomicU64,
    pub upkeep_passes: AtomicU64,
}

/// Rollups are brought up to date this often (queries with a `step` also do it first).
const ROLL_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A minute is rolled up by the upkeep pass once it has been over this long:
/// readings of a minute arrive for a while after it ends (polls batched by
/// the agent, the uplink's latency), and each that arrives after the
/// minute's rollup was made costs another roll-up of its series.
const MINUTE_SETTLES_MS: i64 = 15_000;

/// The most a minute's roll-up waits for readings still on their way: a
/// gateway replaying hours of backlog, or one whose clock is far behind,
/// holds no minute back longer.
const MINUTE_WAITS_AT_MOST_MS: i64 = 300_000;

/// How far the city's readings have arrived at `now`: the oldest of the
/// newest readings stored from gateways heard lately (None: none heard).
pub type Arrived = Arc<dyn Fn(i64) -> Option<i64> + Send + Sync>;

/// The end of the minutes the upkeep pass may roll up at `now`: those over
/// `MINUTE_SETTLES_MS` ago and, when ingest runs behind (a thousand
/// gateways' batches queued seconds deep), that long before where readings
/// have arrived: a minute rolled up while its readings were still queued was
/// rolled up again for each, from the store (58–131 s of upkeep inside a
/// paced 500k/s run, which fell to 80k–105k readings/s).
pub fn settled_until(now: i64, arrived: Option<i64>) -> i64 {
    let settled = now.saturating_sub(MINUTE_SETTLES_MS);
    match arrived {
        Some(a) => settled.min(a.saturating_sub(MINUTE_SETTLES_MS).max(now.saturating_sub(MINUTE_WAITS_AT_MOST_MS))),
        None => settled,
    }
}

/// Keeps rollups current, packs closed hours, and deletes expired data every
/// `every` (and at start).
pub async fn run(
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    every: std::time::Duration,
    stats: Arc<LifecycleStats>,
    (clock, arrived): (SharedClock, Arrived),
    mut stop: watch::Receiver<bool>,
) {
    let mut next_expiry = tokio::time::Instant::now();
    loop {
        let (s, p) = (store.clone(), policy.clone());
        let expire = tokio::time::Instant::now() >= next_expiry;
        let now = clock.now_ms();
        let arrived = arrived(now);
        let started = std::time::Instant::now();
        let pass = tokio::task::spawn_blocking(move || {
            let mut until = settled_until(now, arrived);
            // Every minute with samples about to be deleted has its rollup
            // first, even one not settled yet (a raw retention under 75 s).
            if let Some(raw) = p.shortest_raw_ms().filter(|_| expire) {
                until = until.max(now.saturating_sub(raw).saturating_add(60_000));
            }
            s.roll_up_ended(until)?;
            s.pack(now)?;
            if expire {
                s.expire(now, &|sensor, metric| p.keep(sensor, metric)).map(Some)
            } else {
                Ok(None)
            }
        });
        let pass = pass.await;
        let took = started.elapsed();
        stats.upkeep_us.fetch_add(took.as_micros() as u64, Relaxed);
        stats.upkeep_passes.fetch_add(1, Relaxed);
        tracing::debug!(ms = took.as_millis() as u64, "upkeep pass");
        match pass {
            Ok(Ok(Some(e))) => {
                next_expiry += every;
                stats.expired_samples.fetch_add(e.raw, Relaxed);
                stats.expired_rollups.fetch_add(e.rollups, Relaxed);
                if e.raw + e.rollups > 0 {
                    tracing::info!(samples = e.raw, rollups = e.rollups, "deleted data past its retention");
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!("rollups and retention: {e}"),
            Err(_) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(ROLL_UP_EVERY.min(every)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_settles_after_its_readings_have_arrived_but_waits_five_minutes_at_most() {
        let (now, s) = (10_000_000, 1_000);
        assert_eq!(settled_until(now, None), now - 15 * s, "nothing heard: 15 s after it ended");
        assert_eq!(settled_until(now, Some(now - 300)), now - 15 * s - 300, "ingest keeps up: 15 s after where readings have arrived");
        assert_eq!(settled_until(now, Some(now + 60 * s)), now - 15 * s, "a clock ahead moves nothing forward");
        assert_eq!(settled_until(now, Some(now - 9 * s)), now - 24 * s, "readings queued 9 s deep: the minute waits for them");
        assert_eq!(settled_until(now, Some(now - 3_600 * s)), now - 300 * s, "a gateway an hour behind holds no minute back over 5 min");
    }

    #[test]
    fn the_first_matching_rule_wins_and_unset_fields_fall_back() {
        let cfg: crate::store::settings::StoreConfig = toml::from_str(
            r#"
            path = "/x"
            keep = { raw = "30d", minute = "1y", hour = "forever" }
            [[retention]]
            kind = "traffic"
            metric = "vehicle_count"
            raw = "2d"
            [[retention]]
            kind = "traffic"
            raw = "7d"
            minute = "90d"
            "#,
        )
        .unwrap();
        let cat: Vec<SensorEntry> = vec![toml::from_str("id = \"tr-1\"\nkind = \"traffic\"").unwrap()];
        let p = Policy::new(cfg.keep, cfg.retention, &cat);
        let day = 86_400_000;
        let year = 31_557_600_000; // humantime's year: 365.25 days
        assert_eq!(p.keep("tr-1", "vehicle_count"), Keep { raw_ms: Some(2 * day), minute_ms: Some(year), hour_ms: None });
        assert_eq!(p.keep("tr-1", "speed_kmh"), Keep { raw_ms: Some(7 * day), minute_ms: Some(90 * day), hour_ms: None });
        assert_eq!(p.keep("aq-1", "pm25"), Keep { raw_ms: Some(30 * day), minute_ms: Some(year), hour_ms: None });
        assert_eq!(p.shortest_raw_ms(), Some(2 * day), "what the upkeep pass rolls up to before deleting");
    }
}
