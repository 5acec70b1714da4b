//! The InfluxDB sink: drains the store's forward log into an InfluxDB v2
//! write API. It never sits on the ingest path: ingest appends to the log in
//! the same atomic write as the readings, and the sink deletes entries only
//! after the server confirms them (acks delete, never before). An outage
//! therefore delays points and costs disk, never data.

pub mod lineproto;
pub mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::RequestError;
use shared::SensorId;
use tokio::sync::{watch, Notify};

use crate::catalogue::SensorEntry;
use crate::liveness::Heartbeat;
use crate::store::{Forward, Store};
use lineproto::Scheme;
use settings::InfluxConfig;

#[derive(Default)]
pub struct SinkStats {
    pub written: AtomicU64,
    /// Points the server refused as invalid (logged with the point) or that
    /// line protocol cannot carry (NaN): dropped so they do not block the rest.
    pub rejected: AtomicU64,
    /// Write requests that failed and will be retried.
    pub errors: AtomicU64,
}

pub struct InfluxSink {
    client: influxdb2::Client,
    org: String,
    bucket: String,
    scheme: Scheme,
    batch_points: usize,
    timeout: Duration,
    catalogue: Arc<HashMap<SensorId, SensorEntry>>,
    pub stats: Arc<SinkStats>,
}

/// A request's worth of the log in line protocol, made on the blocking
/// thread that reads it: on the runtime's workers, a `String` a point
/// (500k a second at city load) competed with ingest and the rules.
struct Body {
    text: String,
    /// Where each line ends in `text`: a refused request is split on them.
    ends: Vec<usize>,
    /// The last log entry it covers.
    last: u64,
}

impl Body {
    fn encode(entries: &[Forward], scheme: Scheme, catalogue: &HashMap<SensorId, SensorEntry>, stats: &SinkStats) -> Option<Body> {
        let last = entries.last()?.id;
        let points: usize = entries.iter().map(|e| e.readings.len()).sum();
        // About 100 bytes a line with the catalogue's tags.
        let (mut text, mut ends) = (String::with_capacity(points * 100), Vec::with_capacity(points));
        for e in entries {
            for r in &e.readings {
                match lineproto::line(&mut text, scheme, r, Some(&e.gateway), catalogue.get(&r.sensor)) {
                    Some(()) => ends.push(text.len()),
                    None => {
                        tracing::warn!(sensor = %r.sensor, metric = %r.metric, ts_ms = r.ts_ms, "value {} cannot be written to InfluxDB, dropped", r.value);
                        stats.rejected.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        Some(Body { text, ends, last })
    }
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The server refused these points (HTTP 400, 413, 422): split to find the bad ones.
    #[error("refused: {0}")]
    Refused(String),
    /// Down, slow, overloaded or misconfigured (401, 404, 5xx): retry later.
    #[error("{0}")]
    Retry(String),
}

/// Retry delays: short enough that a 20 s outage drains soon after, long
/// enough not to hammer a server that is down.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl InfluxSink {
    pub fn new(cfg: &InfluxConfig, token: String, catalogue: &[SensorEntry]) -> InfluxSink {
        InfluxSink {
            client: influxdb2::Client::new(cfg.url.clone(), cfg.org.clone(), token),
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
            scheme: cfg.measurement,
            batch_points: cfg.batch_points,
            timeout: cfg.timeout.0,
            catalogue: Arc::new(catalogue.iter().map(|e| (e.id.clone(), e.clone())).collect()),
            stats: Arc::default(),
        }
    }

    async fn send(&self, body: bytes::Bytes) -> Result<(), Failure> {
        let write = self.client.write_line_protocol_with_precision(&self.org, &self.bucket, body, TimestampPrecision::Milliseconds);
        match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(Failure::Retry(format!("no answer within {:?}", self.timeout))),
            Ok(Ok(())) => Ok(()),
            Ok(Err(RequestError::Http { status, text })) if matches!(status.as_u16(), 400 | 413 | 422) => Err(Failure::Refused(format!("HTTP {status}: {}", text.trim()))),
            Ok(Err(RequestError::Http { status, text })) => Err(Failure::Retry(format!("HTTP {status}: {}", text.trim()))),
            Ok(Err(e)) => Err(Failure::Retry(e.to_string())),
        }
    }

    /// Writes `body`; refused requests are split until the bad points are
    /// alone, and those are dropped with a log line naming them. Parts are
    /// slices of the one encoded body (its lines are contiguous): no copies.
    async fn write(&self, body: Body) -> Result<(), Failure> {
        let Body { text, ends, .. } = body;
        let text = bytes::Bytes::from(text);
        let start = |i: usize| if i == 0 { 0 } else { ends[i - 1] };
        let mut todo = vec![(0, ends.len())];
        while let Some((from, to)) = todo.pop() {
            if from == to {
                continue;
            }
            match self.send(text.slice(start(from)..ends[to - 1])).await {
                Ok(()) => {
                    self.stats.written.fetch_add((to - from) as u64, Relaxed);
                }
                Err(Failure::Refused(why)) if to - from == 1 => {
                    let point = String::from_utf8_lossy(&text[start(from)..ends[from]]);
                    tracing::warn!(point = point.trim_end(), "InfluxDB refused a point, dropped: {why}");
                    self.stats.rejected.fetch_add(1, Relaxed);
                }
                Err(Failure::Refused(_)) => {
                    let mid = from + (to - from) / 2;
                    todo.push((mid, to));
                    todo.push((from, mid));
                }
                Err(e @ Failure::Retry(_)) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn run(self, store: Arc<dyn Store>, wake: Arc<Notify>, beat: Arc<Heartbeat>, mut stop: watch::Receiver<bool>) {
        let _alive = beat.alive();
        let mut backoff = BACKOFF_MIN;
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let (s, n, scheme, catalogue, stats) = (store.clone(), self.batch_points, self.scheme, self.catalogue.clone(), self.stats.clone());
            let read = tokio::task::spawn_blocking(move || s.forward_next(n).map(|entries| Body::encode(&entries, scheme, &catalogue, &stats)));
            let body = match read.await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::error!("InfluxDB sink cannot read its log: {e}");
                    None
                }
                Err(_) => return,
            };
            let Some(body) = body else {
                beat.pending(false);
                beat.progress();
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = stop.changed() => {}
                    // The wake-up is a hint; look again now and then regardless.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            beat.pending(true);
            let last = body.last;
            match self.write(body).await {
                Ok(()) => {
                    beat.progress();
                    if let Some(t) = failing_since.take() {
                        tracing::info!("InfluxDB writes succeed again after {:.1} s", t.elapsed().as_secs_f64());
                    }
                    backoff = BACKOFF_MIN;
                    let s = store.clone();
                    match tokio::task::spawn_blocking(move || s.forward_done(last)).await {
                        Ok(Ok(())) => {}
                        // The points are in InfluxDB and will be written again: the same
                        // series and timestamp overwrite, so a repeat does no harm.
                        Ok(Err(e)) => tracing::error!("InfluxDB sink cannot trim its log: {e}"),
                        Err(_) => return,
                    }
                }
                Err(why) => {
                    self.stats.errors.fetch_add(1, Relaxed);
                    if failing_since.is_none() {
                        failing_since = Some(std::time::Instant::now());
                        tracing::warn!("InfluxDB write failed, will retry (points stay in the log): {why}");
                    } else {
                        tracing::debug!("InfluxDB write failed again: {why}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
