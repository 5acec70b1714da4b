//! `sta`: the SensorThings API (`/sta/v1.1/`) of a real collector, through
//! HTTP, over a store holding a day of 1 s readings: the latest observation
//! of every Datastream, a day of one Datastream's Observations walked page by
//! page, and `$count` over all Observations, each timed whole (connect,
//! request, server work, the body read to its end) and repeated for p50/p99.
//!
//! The data is imported straight into the collector's store as closed hours
//! of history (`RedbStore::import_history`: the bytes writing each sample,
//! rolling up and packing would leave, without the per-sample B-tree
//! inserts that made 864M readings take an hour here), not through MQTT:
//! ingest has its own scenario. With `--data DIR` it is generated once and
//! reused by later runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use collector::config::CollectorConfig;
use collector::store::{ClosedHour, RedbStore, Sample, Store};
use serde_json::{json, Value};
use shared::Quality;
use sim::{City, SensorSpec};

const HOUR_MS: i64 = 3_600_000;
/// Series per `RedbStore::import_history` call (each an hour of 3,600 readings).
const SERIES_PER_IMPORT: usize = 500;
/// The viewer token the bench's requests carry: every catalogued sensor, no anonymous rate limit.
const TOKEN: &str = "bench-viewer-token";

/// Which catalogue and how much data.
#[derive(Debug, Clone)]
pub(crate) struct Size {
    /// `demo` (the demo city's catalogue) or `grid` (`sensors` air-quality sensors, pm25 only).
    pub catalogue: String,
    pub sensors: usize,
    pub hours: i64,
}

impl Size {
    fn label(&self) -> String {
        match self.catalogue.as_str() {
            "demo" => format!("demo-{}h", self.hours),
            _ => format!("grid-{}x{}h", self.sensors, self.hours),
        }
    }

    /// Each sensor and the metrics it stores.
    fn sensors(&self) -> Vec<(SensorSpec, Vec<&'static str>)> {
        match self.catalogue.as_str() {
            "demo" => City::default()
                .sensors()
                .into_iter()
                .map(|s| {
                    let m = s.metrics().into_iter().map(|(m, _)| m).collect();
                    (s, m)
                })
                .collect(),
            _ => City { air: self.sensors, traffic: 0, water: 0, noise: 0 }.sensors().into_iter().map(|s| (s, vec!["pm25"])).collect(),
        }
    }
}

/// What the generator wrote, kept beside the data so a later run can reuse it.
#[derive(Debug, Clone)]
struct Generated {
    label: String,
    datastreams: usize,
    readings: u64,
    /// First and one past the last second written, epoch ms.
    from_ms: i64,
    to_ms: i64,
    /// How the data got into the store.
    how: String,
    generate_s: f64,
    /// The store's directory once closed.
    bytes_on_disk: u64,
    /// What the store reported while open (not kept before the import path).
    bytes_open: Option<u64>,
}

const IMPORTED: &str = "imported straight into the collector's store as closed hours of history (RedbStore::import_history: each series' hour as its packed block, packed minute rollups and hour rollup, the same bytes as writing, rolling up and packing it; 500 series an hour per call, values made on a second thread); not through MQTT";

/// Writes `size` into the store at `dir` (the collector's `store.path`):
/// every series at 1 s over the `hours` whole hours before the current one.
fn generate(dir: &Path, size: &Size) -> Result<Generated> {
    let sensors = size.sensors();
    let series: Vec<(SensorSpec, &'static str)> = sensors.iter().flat_map(|(s, ms)| ms.iter().map(move |m| (s.clone(), *m))).collect();
    let now = shared::now_ms();
    let to_ms = now - now.rem_euclid(HOUR_MS);
    let from_ms = to_ms - size.hours * HOUR_MS;
    let st = RedbStore::open(dir)?;
    let start = Instant::now();
    // Values are made on one thread while the other imports (encoding, the B-tree) the previous ones.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<ClosedHour>>(1);
    let hours = size.hours;
    let n = std::thread::scope(|scope| -> Result<u64> {
        scope.spawn(move || {
            for h in 0..hours {
                let hour = from_ms + h * HOUR_MS;
                for group in series.chunks(SERIES_PER_IMPORT) {
                    let batch = group
                        .iter()
                        .map(|(spec, metric)| ClosedHour {
                            sensor: spec.id.as_str().into(),
                            metric: (*metric).into(),
                            hour_ms: hour,
                            samples: (0..3600)
                                .map(|sec| {
                                    let ts_ms = hour + sec * 1000;
                                    let v = sim::city::natural_value(spec, metric, ts_ms);
                                    Sample { ts_ms, value: (v * 100.0).round() / 100.0, quality: Quality::Good }
                                })
                                .collect(),
                        })
                        .collect();
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            }
        });
        let mut n = 0;
        let per_hour = series_count(size).div_ceil(SERIES_PER_IMPORT);
        for (i, batch) in rx.iter().enumerate() {
            n += st.import_history(&batch)?;
            if (i + 1) % per_hour == 0 {
                let h = (i + 1) / per_hour;
                eprintln!("sta bench: {} hour {h}/{}: {n} readings, {:.0}/s imported", size.label(), size.hours, n as f64 / start.elapsed().as_secs_f64());
            }
        }
        Ok(n)
    })?;
    let datastreams = series_count(size);
    if n != datastreams as u64 * size.hours as u64 * 3600 {
        bail!("{n} readings imported, expected {}", datastreams as u64 * size.hours as u64 * 3600);
    }
    let generate_s = start.elapsed().as_secs_f64();
    let bytes_open = st.size_on_disk();
    // redb's file while open includes space it has taken ahead (4 GiB at the full size); closed, it is what the data takes.
    drop(st);
    Ok(Generated { label: size.label(), datastreams, readings: n, from_ms, to_ms, how: IMPORTED.into(), generate_s, bytes_on_disk: dir_bytes(dir)?, bytes_open: Some(bytes_open) })
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        n += if e.file_type()?.is_dir() { dir_bytes(&e.path())? } else { e.metadata()?.len() };
    }
    Ok(n)
}

fn series_count(size: &Size) -> usize {
    size.sensors().iter().map(|(_, m)| m.len()).sum()
}

impl Generated {
    fn to_json(&self) -> Value {
        json!({"label": self.label, "datastreams": self.datastreams, "readings": self.readings, "from_ms": self.from_ms, "to_ms": self.to_ms,
               "how": self.how, "generate_s": self.generate_s, "bytes_on_disk": self.bytes_on_disk, "bytes_open": self.bytes_open})
    }

    fn from_json(v: &Value) -> Option<Generated> {
        // Data generated before import_history: written sample by sample, then rolled up and packed.
        let (how, generate_s) = match v["how"].as_str() {
            Some(how) => (how.to_string(), v["generate_s"].as_f64()?),
            None => (
                "written straight into the collector's store through Store::write (batches of 100,000 readings), rolled up and packed hour by hour as the lifecycle task does; not through MQTT".to_string(),
                v["write_s"].as_f64()? + v["roll_up_and_pack_s"].as_f64()?,
            ),
        };
        Some(Generated {
            label: v["label"].as_str()?.to_string(),
            datastreams: v["datastreams"].as_u64()? as usize,
            readings: v["readings"].as_u64()?,
            from_ms: v["from_ms"].as_i64()?,
            to_ms: v["to_ms"].as_i64()?,
            how,
            generate_s,
            bytes_on_disk: v["bytes_on_disk"].as_u64()?,
            bytes_open: v["bytes_open"].as_u64(),
        })
    }
}

/// The store for `size` under `data` (generated now unless a finished one is there).
fn prepare(data: &Path, size: &Size) -> Result<(Generated, bool)> {
    let dir = data.join(size.label());
    let marker = dir.join("generated.json");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let g = serde_json::from_str(&text).ok().as_ref().and_then(Generated::from_json).with_context(|| format!("{} does not read back", marker.display()))?;
        return Ok((g, true));
    }
    if dir.exists() {
        // A generation that did not finish: start over.
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let g = generate(&dir.join("collector"), size)?;
    std::fs::write(&marker, serde_json::to_string_pretty(&g.to_json())?)?;
    Ok((g, false))
}

/// p50, p99 and max of `ms`, nearest rank.
fn spread(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({"n": ms.len(), "p50_ms": r(at(0.5)), "p99_ms": r(at(0.99)), "max_ms": r(at(1.0)), "min_ms": r(ms[0])})
}

struct Client {
    addr: std::net::SocketAddr,
    base: String,
}

impl Client {
    /// One GET with the viewer token, its body parsed; the clock is the caller's.
    async fn get(&self, path_and_query: &str) -> Result<Value> {
        let (status, body) = support::try_request(self.addr, "GET", path_and_query, "", &format!("Authorization: Bearer {TOKEN}\r\n")).await?;
        if status != 200 {
            bail!("GET {path_and_query}: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Every page from `first`, following `@iot.nextLink`: the pages.
    async fn walk(&self, first: &str) -> Result<Vec<Value>> {
        let mut pages = vec![self.get(first).await?];
        while let Some(next) = pages.last().and_then(|p| p["@iot.nextLink"].as_str()).map(str::to_string) {
            let path = next.strip_prefix(&self.base).with_context(|| format!("nextLink {next} is not under {}", self.base))?;
            pages.push(self.get(path).await?);
        }
        Ok(pages)
    }
}

/// Repeats `run` (after one run not counted, which also checks the answer)
/// until `reps` timed runs or `budget` has passed, at least 3: the spread,
/// the first run's time and what the last run returned (pages walked). A
/// failed run (a 503 past the deadline, a wrong answer) ends it, said in `error`.
async fn timed<F, Fut>(reps: usize, budget: Duration, run: F) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let ms3 = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1000.0;
    let t = Instant::now();
    let mut pages = match run().await {
        Ok(p) => p,
        Err(e) => return json!({"error": format!("{e:#}"), "after_ms": ms3(t.elapsed())}),
    };
    let first_ms = ms3(t.elapsed());
    let (start, mut ms) = (Instant::now(), Vec::new());
    while ms.len() < reps && (ms.len() < 3 || start.elapsed() < budget) {
        let t = Instant::now();
        match run().await {
            Ok(p) => pages = p,
            Err(e) => return json!({"error": format!("{e:#}"), "after_ms": ms3(t.elapsed()), "first_ms": first_ms, "timed_before": ms.len()}),
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut v = spread(ms);
    v["first_ms"] = json!(first_ms);
    v["pages"] = json!(pages);
    v
}

fn enc(s: &str) -> String {
    s.replace(' ', "%20")
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures: others build on this machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

pub(crate) async fn sta(size: Size, data: Option<PathBuf>, quick: bool) -> Result<Value> {
    let load_at_start = load_average();
    let tmp = tempfile::tempdir()?;
    let data = data.unwrap_or_else(|| tmp.path().to_path_buf());
    let s2 = size.clone();
    let d2 = data.clone();
    let (gen, reused) = tokio::task::spawn_blocking(move || prepare(&d2, &s2)).await??;
    let dir = data.join(size.label());

    // The collector as shipped, but for the catalogue and a viewer token.
    let catalogue = sim::run::catalogue_toml(&size.sensors().into_iter().map(|(s, _)| s).collect::<Vec<_>>());
    let text = format!(
        "[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n[[auth.token]]\nname = \"bench\"\nrole = \"viewer\"\nsha256 = \"{}\"\n{catalogue}",
        dir.join("collector").display(),
        shared::auth::sha256_hex(TOKEN)
    );
    let cfg: CollectorConfig = shared::config::parse("sta bench collector", &text, &dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let c = collector::Collector::start(cfg).await?;
    let start_s = t.elapsed().as_secs_f64();
    let client = Client { addr: c.http_addr, base: format!("http://{}", c.http_addr) };
    let budget = Duration::from_secs(if quick { 5 } else { 60 });

    // (a) The latest observation of every Datastream, all pages.
    let latest_q = enc("/sta/v1.1/Datastreams?$expand=Observations($top=1;$orderby=phenomenonTime desc)");
    let expect_latest = collector::sta::time::format(gen.to_ms - 1000);
    let latest = timed(200, budget, || async {
        let pages = client.walk(&latest_q).await?;
        let mut n = 0;
        for p in &pages {
            for ds in p["value"].as_array().context("value")? {
                let t = ds["Observations"][0]["phenomenonTime"].as_str().unwrap_or("");
                if t != expect_latest {
                    bail!("latest of {}: {t}, expected {expect_latest}", ds["@iot.id"]);
                }
                n += 1;
            }
        }
        if n != gen.datastreams {
            bail!("{n} Datastreams, expected {}", gen.datastreams);
        }
        Ok(pages.len())
    })
    .await;

    // (b) One Datastream's day (all the data there is) with a time $filter, every page.
    let (mid, _) = &size.sensors()[size.sensors().len() / 2];
    let ds_id = format!("{}~{}", mid.id, size.sensors()[size.sensors().len() / 2].1[0]);
    let (from, to) = (collector::sta::time::format(gen.from_ms), collector::sta::time::format(gen.to_ms));
    let per_series = (gen.to_ms - gen.from_ms) / 1000;
    let mut day = serde_json::Map::new();
    for top in [None, Some(10_000)] {
        let q = enc(&format!(
            "/sta/v1.1/Datastreams('{ds_id}')/Observations?$filter=phenomenonTime ge {from} and phenomenonTime lt {to}{}",
            top.map(|t| format!("&$top={t}")).unwrap_or_default()
        ));
        let walk = timed(if top.is_none() { 20 } else { 100 }, budget, || async {
            let pages = client.walk(&q).await?;
            let n: usize = pages.iter().map(|p| p["value"].as_array().map_or(0, Vec::len)).sum();
            if n as i64 != per_series {
                bail!("{ds_id}: {n} observations over {} pages, expected {per_series}", pages.len());
            }
            Ok(pages.len())
        })
        .await;
        let key = match top {
            None => "page_default_top",
            Some(_) => "page_top_10000",
        };
        day.insert(key.into(), json!({"query": q, "walk": walk}));
    }

    // (c) $count over all Observations.
    let count_q = enc("/sta/v1.1/Observations?$count=true&$top=1");
    let count = timed(200, budget, || async {
        let p = client.get(&count_q).await?;
        if p["@iot.count"].as_u64() != Some(gen.readings) {
            bail!("@iot.count {}, expected {}", p["@iot.count"], gen.readings);
        }
        Ok(1)
    })
    .await;

    let rss = crate::common::proc_usage(std::process::id())?;
    c.shutdown().await;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "scenario": "sta",
        "size": {"label": gen.label, "catalogue": size.catalogue, "sensors": size.sensors().len(), "datastreams": gen.datastreams, "hours_at_1s": size.hours,
                 "readings": gen.readings, "from": from, "to": to},
        "data": {"how": gen.how, "reused_from_earlier_run": reused, "generate_s": r2(gen.generate_s), "readings_per_s": (gen.readings as f64 / gen.generate_s).round(),
                 "bytes_on_disk_closed": gen.bytes_on_disk, "bytes_per_reading_closed": r2(gen.bytes_on_disk as f64 / gen.readings as f64), "bytes_while_open": gen.bytes_open},
        "load_average": {"at_start": load_at_start, "at_end": load_average()},
        "settings": "collector as shipped ([sta] defaults: default_top 100, max_top 10000, deadline 10s; embedded store), a viewer token on every request (all catalogued sensors, no anonymous rate limit); one HTTP/1.0 connection per request, sequential; the clock covers connect, request, answer and the JSON parse of each page",
        "collector_start_s": r2(start_s),
        "latest_of_every_datastream": {"query": latest_q, "walk": latest},
        "day_of_one_datastream": {"datastream": ds_id, "observations": per_series, "walks": day},
        "count_all_observations": {"query": count_q, "request": count},
        "bench_process_rss_mb": crate::common::r1(rss.1), "bench_process_peak_rss_mb": crate::common::r1(rss.2),
    }))
}
