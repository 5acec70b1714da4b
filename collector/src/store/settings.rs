//! `[store]`: where the embedded store lives and how long each resolution
//! is kept (`keep`, `[[store.retention]]`).

use std::path::PathBuf;

use serde::Deserialize;
use shared::config::{ByteSize, HumanDuration, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Keep series in the embedded store. With `false` only `[influxdb]`
    /// keeps them; the store still holds delivery progress and the sink's log.
    #[serde(default = "yes")]
    pub series: bool,
    /// How long each resolution is kept, unless a `[[store.retention]]` entry says otherwise.
    #[serde(default)]
    pub keep: KeepConfig,
    /// Per-kind or per-metric retention; the first entry that matches a series wins.
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
    /// How often expired data is deleted.
    #[serde(default = "default_expire_every")]
    pub expire_every: HumanDuration,
    /// Memory the store keeps file pages in (redb's cache; its own default,
    /// 1 GiB, let a collector under load grow past a gigabyte).
    #[serde(default = "default_cache")]
    pub cache: ByteSize,
}

fn default_cache() -> ByteSize {
    ByteSize(super::DEFAULT_CACHE_BYTES as u64)
}

fn default_expire_every() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

/// A retention period: a duration (`30d`, `1y`) or `forever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime(pub Option<std::time::Duration>);

impl<'de> Deserialize<'de> for Lifetime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "forever" {
            return Ok(Lifetime(None));
        }
        humantime::parse_duration(&s)
            .map(|d| Lifetime(Some(d)))
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is neither a duration ({e}; e.g. \"30d\", \"1y\") nor \"forever\"")))
    }
}

impl std::fmt::Display for Lifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("forever"),
            // `90d`, not humantime's `2months 29days 2h 52m 48s`.
            Some(d) if d.as_secs() % 86_400 == 0 && d.subsec_nanos() == 0 => write!(f, "{}d", d.as_secs() / 86_400),
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepConfig {
    /// Raw samples.
    #[serde(default = "default_keep_raw")]
    pub raw: Lifetime,
    /// 1-minute rollups (min, mean, max, count, last).
    #[serde(default = "default_keep_minute")]
    pub minute: Lifetime,
    /// 1-hour rollups.
    #[serde(default = "default_keep_hour")]
    pub hour: Lifetime,
}

impl Default for KeepConfig {
    fn default() -> Self {
        KeepConfig { raw: default_keep_raw(), minute: default_keep_minute(), hour: default_keep_hour() }
    }
}

const DAY: u64 = 86_400;

fn default_keep_raw() -> Lifetime {
    Lifetime(Some(std::time::Duration::from_secs(30 * DAY)))
}

fn default_keep_minute() -> Lifetime {
    Lifetime(Some(std::time::Duration::from_secs(365 * DAY)))
}

fn default_keep_hour() -> Lifetime {
    Lifetime(Some(std::time::Duration::from_secs(10 * 365 * DAY)))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Sensor kind from the catalogue, e.g. `traffic`.
    pub kind: Option<String>,
    /// Metric, e.g. `noise_laeq`.
    pub metric: Option<String>,
    pub raw: Option<Lifetime>,
    pub minute: Option<Lifetime>,
    pub hour: Option<Lifetime>,
}

fn yes() -> bool {
    true
}

impl StoreConfig {
    pub fn validate(&self, p: &mut Vec<Problem>) {
        for (i, r) in self.retention.iter().enumerate() {
            if r.kind.is_none() && r.metric.is_none() {
                p.push(Problem::new(format!("store.retention[{i}]"), "name the `kind` or `metric` it applies to"));
            }
            if r.raw.is_none() && r.minute.is_none() && r.hour.is_none() {
                p.push(Problem::new(format!("store.retention[{i}]"), "give at least one of `raw`, `minute`, `hour`"));
            }
        }
        if self.cache.0 < 8 << 20 || self.cache.0 > 64 << 30 {
            p.push(Problem::new("store.cache", "must be between 8MiB and 64GiB"));
        }
        if self.expire_every.0 < std::time::Duration::from_secs(1) {
            p.push(Problem::new("store.expire_every", "must be at least 1s"));
        }
    }

    /// One line per retention rule, as `check` shows them.
    pub fn retention_summary(&self) -> Vec<String> {
        if !self.series {
            return vec!["store: series not kept here (series = false)".into()];
        }
        let k = &self.keep;
        let mut out =
            vec![format!("retention: raw {}, 1-minute rollups {}, 1-hour rollups {} (deleted every {})", k.raw, k.minute, k.hour, humantime::format_duration(self.expire_every.0))];
        for r in &self.retention {
            let what = match (&r.kind, &r.metric) {
                (Some(k), Some(m)) => format!("kind {k}, metric {m}"),
                (Some(k), None) => format!("kind {k}"),
                (None, Some(m)) => format!("metric {m}"),
                (None, None) => "nothing".into(),
            };
            let or = |l: Option<Lifetime>, d: Lifetime| l.unwrap_or(d);
            out.push(format!("retention for {what}: raw {}, 1-minute {}, 1-hour {}", or(r.raw, k.raw), or(r.minute, k.minute), or(r.hour, k.hour)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<String> {
        let c: StoreConfig = toml::from_str(toml_text).unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        p.iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
    }

    #[test]
    fn the_page_cache_defaults_to_256_mib_and_a_size_outside_its_range_is_named() {
        let c: StoreConfig = toml::from_str("path = \"s\"").unwrap();
        assert_eq!(c.cache.0, 256 << 20);
        assert!(problems("path = \"s\"\ncache = \"64MiB\"").is_empty());
        for bad in ["1MiB", "100GiB"] {
            let p = problems(&format!("path = \"s\"\ncache = \"{bad}\""));
            assert!(p.len() == 1 && p[0].contains("store.cache") && p[0].contains("8MiB and 64GiB"), "{bad}: {p:?}");
        }
    }
}
