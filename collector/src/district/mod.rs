//! The city at one glance (一屏知全城): every sensor's state in one pass over
//! the catalogue, the live view and the open alerts, folded per district into
//! what a city reports — sensors ok / alerting / stale / offline, the worst
//! open alert, the air quality index (`aqi`, HJ 633-2012), river levels
//! against their warning lines and noise against its limit (the lowest
//! threshold rule that watches the sensor), traffic speed and occupancy —
//! with a few hours of trend kept in memory. It reads the registry, the
//! catalogue and the alerting service and writes nothing but its own history;
//! `http::districts` serves it.

pub mod aqi;
pub mod boundaries;
pub mod settings;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use shared::clock::SharedClock;
use shared::Sample;

use crate::catalogue::SensorEntry;
use crate::registry::Registry;
use crate::rules::alerting::Alerting;
use crate::rules::{Alert, Rule, Severity};
use boundaries::Boundaries;
use settings::MapConfig;

/// A sensor's state, worst last; the page and `/api/v1/sensors` agree on the
/// order offline > stale > alerting > ok for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Alerting,
    Stale,
    Offline,
}

impl Status {
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "ok" => Status::Ok,
            "alerting" => Status::Alerting,
            "stale" => Status::Stale,
            "offline" => Status::Offline,
            _ => return None,
        })
    }
}

pub fn severity_code(s: Option<Severity>) -> u8 {
    s.map_or(0, |s| s as u8 + 1)
}

/// One sensor as the city view sees it.
#[derive(Debug, Clone)]
pub struct SensorNow {
    pub id: String,
    pub entry: Option<Arc<SensorEntry>>,
    pub gateway: Option<String>,
    pub status: Status,
    /// Its worst open alert's severity, whatever its status.
    pub severity: Option<Severity>,
    pub last_seen_ms: Option<i64>,
    pub latest: BTreeMap<shared::Metric, Sample>,
}

impl SensorNow {
    pub fn district(&self) -> Option<&str> {
        self.entry.as_ref().and_then(|e| e.district.as_deref())
    }
    pub fn kind(&self) -> Option<&str> {
        self.entry.as_ref().map(|e| e.kind.as_str())
    }
    /// Worst first: by status, then severity; alerting above stale and offline
    /// in a list, since that is what an operator acts on.
    pub fn rank(&self) -> (u8, u8) {
        let s = match self.status {
            Status::Alerting => 3,
            Status::Offline => 2,
            Status::Stale => 1,
            Status::Ok => 0,
        };
        (s, severity_code(self.severity))
    }
    fn fresh(&self, metric: &str) -> Option<f64> {
        if matches!(self.status, Status::Stale | Status::Offline) {
            return None;
        }
        self.latest.get(metric).filter(|s| s.quality != shared::Quality::Bad).map(|s| s.value).filter(|v| v.is_finite())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorstAlert {
    pub id: u64,
    pub severity: Severity,
    pub rule: String,
    pub sensor: String,
    pub metric: String,
    pub started_ts_ms: i64,
}

/// A level against its limit: river water against the warning line, noise against its zone limit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgainstLimit {
    /// Sensors with a fresh value.
    pub reporting: usize,
    pub mean: Option<f64>,
    pub max: Option<f64>,
    pub max_sensor: Option<String>,
    /// The limit of the sensor with the highest value relative to its own (the closest to, or furthest over, it).
    pub limit: Option<f64>,
    /// Sensors above their limit.
    pub above: usize,
    /// Highest value minus its sensor's limit (negative: below the line).
    pub margin: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    pub reporting: usize,
    pub mean_speed_kmh: Option<f64>,
    pub mean_occupancy_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Indicators {
    pub aqi: Option<aqi::Aqi>,
    /// Mean concentration per pollutant over the sensors reporting it now.
    pub pollutants: BTreeMap<&'static str, f64>,
    pub water: Option<AgainstLimit>,
    pub noise: Option<AgainstLimit>,
    pub traffic: Option<Traffic>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Spark {
    pub t: Vec<i64>,
    pub aqi: Vec<Option<u32>>,
    pub alerting: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistrictView {
    pub name: String,
    pub sensors: usize,
    pub ok: usize,
    pub alerting: usize,
    pub stale: usize,
    pub offline: usize,
    pub open_alerts: usize,
    pub worst: Option<WorstAlert>,
    /// Position of the league, 1 = the worst off.
    pub rank: usize,
    /// Mean position of its placed sensors, for a label when no boundary is configured.
    pub centre: Option<[f64; 2]>,
    pub indicators: Indicators,
    pub spark: Spark,
}

/// Everything the city view computed at one instant.
pub struct Snapshot {
    pub now_ms: i64,
    pub sensors: Vec<SensorNow>,
    /// Worst first (the league); `city` is all sensors together.
    pub districts: Vec<DistrictView>,
    pub city: DistrictView,
    pub open_alerts: Vec<Alert>,
}

/// Trend points: one a minute, six hours.
const SAMPLE_EVERY_MS: i64 = 60_000;
const KEEP_SAMPLES: usize = 360;
/// A snapshot is reused for this long: the map, the league and the table
/// asked together share one pass over 10,000 sensors.
const REUSE_MS: i64 = 500;

struct Point {
    t: i64,
    per: HashMap<String, (Option<u32>, u32)>,
}

pub struct City {
    pub config: MapConfig,
    pub boundaries: Option<Boundaries>,
    registry: Arc<Registry>,
    catalogue: Vec<Arc<SensorEntry>>,
    alerting: Arc<Alerting>,
    clock: SharedClock,
    last: Mutex<Option<Arc<Snapshot>>>,
    history: Mutex<VecDeque<Point>>,
}

impl City {
    pub fn new(config: MapConfig, registry: Arc<Registry>, catalogue: &[SensorEntry], alerting: Arc<Alerting>, clock: SharedClock) -> City {
        // Validation read the file already; a file that changed since is reported and left out.
        let boundaries = config.boundaries.as_ref().and_then(|f| match std::fs::read(f).map_err(|e| e.to_string()).and_then(|b| Boundaries::parse(&b)) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!("map.boundaries {}: {e}; the map falls back to the sensors' extent", f.display());
                None
            }
        });
        let catalogue = catalogue.iter().cloned().map(Arc::new).collect();
        City { config, boundaries, registry, catalogue, alerting, clock, last: Mutex::default(), history: Mutex::default() }
    }

    /// The current snapshot (at most `REUSE_MS` old).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let now = self.clock.now_ms();
        if let Some(s) = self.last.lock().unwrap().as_ref().filter(|s| (0..REUSE_MS).contains(&(now - s.now_ms))) {
            return s.clone();
        }
        let mut snap = build(now, &self.catalogue, &self.registry, &self.alerting.alerts(|a| a.is_open()), &self.alerting.rules(), offline_gateways(&self.registry));
        self.trend(&mut snap);
        let snap = Arc::new(snap);
        *self.last.lock().unwrap() = Some(snap.clone());
        snap
    }

    /// Records a trend point when one is due and puts the trend on each district.
    fn trend(&self, snap: &mut Snapshot) {
        let mut h = self.history.lock().unwrap();
        if h.back().is_none_or(|p| snap.now_ms - p.t >= SAMPLE_EVERY_MS) {
            let per = snap.districts.iter().chain([&snap.city]).map(|d| (d.name.clone(), (d.indicators.aqi.as_ref().map(|a| a.aqi), d.alerting as u32))).collect();
            h.push_back(Point { t: snap.now_ms, per });
            while h.len() > KEEP_SAMPLES {
                h.pop_front();
            }
        }
        for d in snap.districts.iter_mut().chain([&mut snap.city]) {
            let mut s = Spark::default();
            for p in h.iter() {
                let (a, n) = p.per.get(&d.name).copied().unwrap_or((None, 0));
                s.t.push(p.t);
                s.aqi.push(a);
                s.alerting.push(n);
            }
            d.spark = s;
        }
    }

    /// Takes a trend point every minute whether or not anyone is looking.
    pub async fn sample(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(SAMPLE_EVERY_MS as u64));
        loop {
            tokio::select! {
                _ = every.tick() => { self.snapshot(); }
                _ = stop.changed() => return,
            }
        }
    }
}

fn offline_gateways(registry: &Registry) -> std::collections::HashSet<String> {
    registry.gateways().into_iter().filter(|g| g.status == "offline").map(|g| g.id).collect()
}

/// The lowest limit of the upward threshold rules on `metric` that watch this sensor.
fn limit_for(rules: &[Rule], id: &str, entry: Option<&SensorEntry>, metric: &str) -> Option<f64> {
    use crate::rules::rule::{glob, Kind, Op};
    rules
        .iter()
        .filter(|r| r.kind == Kind::Threshold && r.metric.as_deref() == Some(metric) && matches!(r.op, Some(Op::Gt | Op::Ge)))
        .filter(|r| {
            let s = &r.select;
            s.sensor.as_deref().is_none_or(|p| glob(p, id))
                && s.kind.as_deref().is_none_or(|k| entry.map(|e| e.kind.as_str()) == Some(k))
                && s.district.as_deref().is_none_or(|d| entry.and_then(|e| e.district.as_deref()) == Some(d))
        })
        .filter_map(|r| r.value)
        .reduce(f64::min)
}

/// One pass: each sensor's state, then the per-district folds.
pub fn build(now: i64, catalogue: &[Arc<SensorEntry>], registry: &Registry, open: &[Alert], rules: &[Rule], offline: std::collections::HashSet<String>) -> Snapshot {
    let mut seen = registry.sensors();
    let mut worst: HashMap<&str, &Alert> = HashMap::new();
    for a in open {
        let w = worst.entry(a.sensor.as_str()).or_insert(a);
        if (a.severity, std::cmp::Reverse(a.started_ts_ms)) > (w.severity, std::cmp::Reverse(w.started_ts_ms)) {
            *w = a;
        }
    }
    let now_of = |id: &str, entry: Option<Arc<SensorEntry>>, s: Option<crate::registry::SensorSeen>| {
        let s = s.unwrap_or_default();
        let gateway = s.gateway.clone().map(|g| g.to_string()).or_else(|| entry.as_ref().and_then(|e| e.gateway.as_ref().map(|g| g.to_string())));
        let severity = worst.get(id).map(|a| a.severity);
        let status = if gateway.as_ref().is_some_and(|g| offline.contains(g)) {
            Status::Offline
        } else if s.stale(now) {
            Status::Stale
        } else if severity.is_some() {
            Status::Alerting
        } else {
            Status::Ok
        };
        SensorNow { id: id.to_string(), entry, gateway, status, severity, last_seen_ms: s.last_seen_ms, latest: s.latest }
    };
    let mut sensors: Vec<SensorNow> = Vec::with_capacity(catalogue.len() + 8);
    for e in catalogue {
        let s = seen.remove(e.id.as_str());
        sensors.push(now_of(&e.id, Some(e.clone()), s));
    }
    let mut rest: Vec<_> = seen.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, s) in rest {
        sensors.push(now_of(&id, None, Some(s)));
    }

    let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in sensors.iter().enumerate() {
        if let Some(d) = s.district() {
            by.entry(d).or_default().push(i);
        }
    }
    let alerts_in = |members: &[usize]| -> Vec<&Alert> {
        let ids: std::collections::HashSet<&str> = members.iter().map(|&i| sensors[i].id.as_str()).collect();
        open.iter().filter(|a| ids.contains(a.sensor.as_str())).collect()
    };
    let mut districts: Vec<DistrictView> = by.iter().map(|(name, members)| fold(name, members, &sensors, &alerts_in(members), rules)).collect();
    districts.sort_by(|a, b| league_key(b).partial_cmp(&league_key(a)).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.name.cmp(&b.name)));
    for (i, d) in districts.iter_mut().enumerate() {
        d.rank = i + 1;
    }
    let all: Vec<usize> = (0..sensors.len()).collect();
    let city = fold("city", &all, &sensors, &open.iter().collect::<Vec<_>>(), rules);
    Snapshot { now_ms: now, sensors, districts, city, open_alerts: open.to_vec() }
}

/// The league's order, worst first: worst open alert, then the share alerting,
/// the share not reporting, then the air.
fn league_key(d: &DistrictView) -> (u8, f64, f64, u32) {
    let n = d.sensors.max(1) as f64;
    (severity_code(d.worst.as_ref().map(|w| w.severity)), d.alerting as f64 / n, (d.stale + d.offline) as f64 / n, d.indicators.aqi.as_ref().map_or(0, |a| a.aqi))
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn against(members: &[usize], sensors: &[SensorNow], rules: &[Rule], metric: &str) -> Option<AgainstLimit> {
    let mut out = AgainstLimit::default();
    let mut values = Vec::new();
    let mut best: Option<(f64, f64, f64, &str)> = None; // (value - limit or value, value, limit, id)
    for &i in members {
        let s = &sensors[i];
        let Some(v) = s.fresh(metric) else { continue };
        values.push(v);
        let limit = limit_for(rules, &s.id, s.entry.as_deref(), metric);
        if limit.is_some_and(|l| v > l) {
            out.above += 1;
        }
        let key = limit.map_or(f64::NEG_INFINITY, |l| v - l);
        if best.is_none_or(|b| key > b.0 || (key == b.0 && v > b.1)) {
            best = Some((key, v, limit.unwrap_or(f64::NAN), &s.id));
        }
        if out.max.is_none_or(|m| v > m) {
            out.max = Some(v);
            out.max_sensor = Some(s.id.clone());
        }
    }
    if values.is_empty() {
        return None;
    }
    out.reporting = values.len();
    out.mean = mean(&values);
    if let Some((key, _, limit, _)) = best.filter(|b| b.2.is_finite()) {
        out.limit = Some(limit);
        out.margin = Some(key);
    }
    Some(out)
}

fn fold(name: &str, members: &[usize], sensors: &[SensorNow], open: &[&Alert], rules: &[Rule]) -> DistrictView {
    let count = |st: Status| members.iter().filter(|&&i| sensors[i].status == st).count();
    let worst = open.iter().max_by_key(|a| (a.severity, std::cmp::Reverse(a.started_ts_ms))).map(|a| WorstAlert {
        id: a.id,
        severity: a.severity,
        rule: a.rule.clone(),
        sensor: a.sensor.clone(),
        metric: a.metric.clone(),
        started_ts_ms: a.started_ts_ms,
    });
    let mut pollutants = BTreeMap::new();
    let mut conc = Vec::new();
    for p in aqi::Pollutant::ALL {
        let v: Vec<f64> = members.iter().filter_map(|&i| sensors[i].fresh(p.metric())).collect();
        if let Some(m) = mean(&v) {
            pollutants.insert(p.metric(), (m * 10.0).round() / 10.0);
            conc.push((p, m));
        }
    }
    let speeds: Vec<f64> = members.iter().filter_map(|&i| sensors[i].fresh("speed_kmh")).collect();
    let occ: Vec<f64> = members.iter().filter_map(|&i| sensors[i].fresh("occupancy")).collect();
    let traffic =
        (!speeds.is_empty() || !occ.is_empty()).then(|| Traffic { reporting: speeds.len().max(occ.len()), mean_speed_kmh: mean(&speeds), mean_occupancy_pct: mean(&occ) });
    let placed: Vec<[f64; 2]> = members.iter().filter_map(|&i| sensors[i].entry.as_ref().and_then(|e| Some([e.lat?, e.lon?]))).collect();
    let centre = (!placed.is_empty()).then(|| {
        let n = placed.len() as f64;
        [placed.iter().map(|p| p[0]).sum::<f64>() / n, placed.iter().map(|p| p[1]).sum::<f64>() / n]
    });
    DistrictView {
        name: name.to_string(),
        sensors: members.len(),
        ok: count(Status::Ok),
        alerting: count(Status::Alerting),
        stale: count(Status::Stale),
        offline: count(Status::Offline),
        open_alerts: open.len(),
        worst,
        rank: 0,
        centre,
        indicators: Indicators {
            aqi: aqi::aqi(&conc),
            pollutants,
            water: against(members, sensors, rules, "water_level_m"),
            noise: against(members, sensors, rules, "noise_laeq"),
            traffic,
        },
        spark: Spark::default(),
    }
}

#[cfg(test)]
mod tests;
