//! The city's history, when collectors share the batch log by partition:
//! each stores only the batches of the partitions it held, so one
//! gateway's series may lie in several stores (it moved when a collector
//! died or joined). Every collector answers questions about its own store on
//! `citysense.v1.history.<name>` (`serve`), and reads the city's through
//! `CityStore`: its own store and every other collector sharing the log,
//! merged (samples by time, rollups by bucket). The HTTP API, exports and
//! SensorThings read through it; ingest and upkeep write the store as before.
//!
//! A collector that is down takes its share of the history with it until it
//! is back: reads answer without it (one alive that does not answer within
//! 5 s fails the read, naming it). One restarted on an empty disk has
//! lost its share: `[influxdb]`, or every collector reading the whole log
//! (`partitions = 0`), keeps the whole history elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use shared::{Metric, Sample, SensorId};
use tokio::sync::watch;

use super::holdings::Holdings;
use super::log::Link;
use crate::store::{Expired, Forward, Keep, Level, Progress, Rollup, SeqSpace, Store, StoreError, Write};

const PREFIX: &str = "citysense.v1.history";
/// Items in one answer at most: a page of samples or rollups stays well
/// under NATS's default 1 MB message.
const PAGE: usize = 16_384;
/// How long a collector is given to answer one page.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ask {
    Samples { sensor: String, metric: String, from: i64, to: i64, limit: u32 },
    Last { sensor: String, metric: String },
    Series { after: Option<(SensorId, Metric)> },
    First { sensor: String, metric: String },
    Rollups { sensor: String, metric: String, level: Level, from: i64, to: i64 },
}

#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Samples(Vec<Sample>),
    Last(Option<Sample>),
    Series(Vec<(SensorId, Metric)>),
    First(Option<i64>),
    Rollups(Vec<Rollup>),
    Failed(String),
    /// Nobody answers for that collector's store: it is down.
    Absent,
}

/// Answers the other collectors' questions about `store` until `stop`.
pub async fn serve(link: Link, name: String, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    super::keep_trying!("answering for this collector's share of the history", stop, answer_all(&link, &name, &store));
}

async fn answer_all(link: &Link, name: &str, store: &Arc<dyn Store>) -> Result<(), async_nats::Error> {
    let client = link.connect("citysense-collector-history").await?;
    let mut asked = client.subscribe(format!("{PREFIX}.{name}")).await?;
    while let Some(m) = asked.next().await {
        let Some(reply) = m.reply else { continue };
        let (client, store) = (client.clone(), store.clone());
        tokio::spawn(async move {
            let answer = match postcard::from_bytes::<Ask>(&m.payload) {
                Ok(ask) => tokio::task::spawn_blocking(move || answer(store.as_ref(), ask)).await.unwrap_or_else(|e| Answer::Failed(e.to_string())),
                Err(e) => Answer::Failed(format!("not a question about the history: {e}")),
            };
            let bytes = postcard::to_stdvec(&answer).expect("an answer serializes");
            if let Err(e) = client.publish(reply, bytes.into()).await {
                tracing::warn!("answering a question about the history: {e}");
            }
        });
    }
    Err("the subscription ended".into())
}

fn answer(store: &dyn Store, ask: Ask) -> Answer {
    let read = || -> Result<Answer, StoreError> {
        Ok(match ask {
            Ask::Samples { sensor, metric, from, to, limit } => Answer::Samples(store.query(&sensor, &metric, from, to, (limit as usize).min(PAGE))?),
            Ask::Last { sensor, metric } => Answer::Last(store.last(&sensor, &metric)?),
            Ask::Series { after } => {
                let mut all = store.series();
                all.sort_unstable();
                Answer::Series(all.into_iter().filter(|k| after.as_ref().is_none_or(|a| k > a)).take(PAGE).collect())
            }
            Ask::First { sensor, metric } => Answer::First(store.first_ts(&sensor, &metric)?),
            Ask::Rollups { sensor, metric, level, from, to } => {
                store.roll_up_series(&sensor, &metric)?;
                let mut r = store.rollups(&sensor, &metric, level, from, to)?;
                r.truncate(PAGE);
                Answer::Rollups(r)
            }
        })
    };
    read().unwrap_or_else(|e| Answer::Failed(e.to_string()))
}

/// The other collectors sharing the log, asked from blocking code (the
/// store's callers run on blocking threads).
struct Peers {
    client: async_nats::Client,
    holdings: Arc<Holdings>,
    name: String,
    runtime: tokio::runtime::Handle,
}

type Answers = Vec<(String, Result<Vec<Answer>, String>)>;

impl Peers {
    /// Every other collector's answer to `first`, page after page (`next`
    /// gives the question after a page, or `None` when that was the last).
    fn ask(&self, first: Ask, next: fn(&Ask, &Answer) -> Option<Ask>) -> Answers {
        let peers: Vec<String> = self.holdings.members().into_iter().filter(|m| *m != self.name).collect();
        if peers.is_empty() {
            return Vec::new();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let asked = peers.into_iter().map(|peer| {
                let (client, first) = (client.clone(), first.clone());
                async move {
                    let subject = format!("{PREFIX}.{peer}");
                    let pages = pages(|q| request(&client, &subject, q), first, next).await;
                    (peer, pages)
                }
            });
            let _ = tx.send(futures_util::future::join_all(asked).await);
        });
        rx.recv().unwrap_or_default()
    }
}

/// One question to one collector. One that is not listening at all (the
/// cluster says so at once: it died, its lease not yet expired) holds
/// nothing that can be read: `Answer::Absent`, as once its lease is gone.
async fn request(client: &async_nats::Client, subject: &str, q: Ask) -> Result<Answer, String> {
    let bytes = postcard::to_stdvec(&q).expect("a question serializes");
    let reply = match tokio::time::timeout(ANSWER_WITHIN, client.request(subject.to_string(), bytes.into())).await {
        Err(_) => return Err(format!("no answer within {} s", ANSWER_WITHIN.as_secs())),
        Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => return Ok(Answer::Absent),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(reply)) => reply,
    };
    postcard::from_bytes(&reply.payload).map_err(|e| format!("an answer that is not one: {e}"))
}

/// Asks `first`, then what `next` makes of each answer, until it makes nothing.
async fn pages<F: std::future::Future<Output = Result<Answer, String>>>(
    mut ask: impl FnMut(Ask) -> F,
    first: Ask,
    next: fn(&Ask, &Answer) -> Option<Ask>,
) -> Result<Vec<Answer>, String> {
    let mut out = Vec::new();
    let mut q = Some(first);
    while let Some(this) = q.take() {
        let answer = ask(this.clone()).await?;
        if let Answer::Failed(why) = answer {
            return Err(why);
        }
        q = next(&this, &answer);
        out.push(answer);
    }
    Ok(out)
}

fn one_page(_: &Ask, _: &Answer) -> Option<Ask> {
    None
}

fn next_page(q: &Ask, a: &Answer) -> Option<Ask> {
    match (q, a) {
        (Ask::Samples { sensor, metric, from: _, to, limit }, Answer::Samples(got)) if got.len() >= PAGE && (got.len() as u32) < *limit => {
            let last = got.last()?.ts_ms;
            (last < *to).then(|| Ask::Samples { sensor: sensor.clone(), metric: metric.clone(), from: last + 1, to: *to, limit: limit - got.len() as u32 })
        }
        (Ask::Rollups { sensor, metric, level, from: _, to }, Answer::Rollups(got)) if got.len() >= PAGE => {
            let last = got.last()?.start_ms;
            (last < *to).then(|| Ask::Rollups { sensor: sensor.clone(), metric: metric.clone(), level: *level, from: last + 1, to: *to })
        }
        (Ask::Series { .. }, Answer::Series(got)) if got.len() >= PAGE => Some(Ask::Series { after: got.last().cloned() }),
        _ => None,
    }
}

/// This collector's store, read together with the others': what the city's
/// API and feeds read. Writes and upkeep go to this collector's store only.
pub struct CityStore {
    own: Arc<dyn Store>,
    peers: Peers,
}

impl CityStore {
    /// Must be made on the runtime its readers' blocking threads belong to.
    pub fn new(own: Arc<dyn Store>, client: async_nats::Client, holdings: Arc<Holdings>, name: String) -> CityStore {
        CityStore { own, peers: Peers { client, holdings, name, runtime: tokio::runtime::Handle::current() } }
    }

    /// The others' answers, or an error naming the first that gave none.
    fn others(&self, first: Ask, next: fn(&Ask, &Answer) -> Option<Ask>) -> Result<Vec<Answer>, StoreError> {
        let mut all = Vec::new();
        for (peer, got) in self.peers.ask(first, next) {
            all.extend(got.map_err(|detail| StoreError::Elsewhere { collector: peer, detail })?);
        }
        Ok(all)
    }
}

impl Store for CityStore {
    fn write(&self, w: &Write) -> Result<(), StoreError> {
        self.own.write(w)
    }
    fn forward_next(&self, max_readings: usize) -> Result<Vec<Forward>, StoreError> {
        self.own.forward_next(max_readings)
    }
    fn forward_done(&self, id: u64) -> Result<(), StoreError> {
        self.own.forward_done(id)
    }
    fn forward_backlog(&self) -> u64 {
        self.own.forward_backlog()
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.own.sync()
    }
    fn progress(&self) -> Result<Vec<(SeqSpace, Progress)>, StoreError> {
        self.own.progress()
    }

    /// The samples of every store, by time; a sample two stores hold (a
    /// batch stored by a holder that died before it was acknowledged, and
    /// again by the next) once.
    fn query(&self, sensor: &str, metric: &str, from: i64, to: i64, limit: usize) -> Result<Vec<Sample>, StoreError> {
        let ask = Ask::Samples { sensor: sensor.into(), metric: metric.into(), from, to, limit: limit.min(u32::MAX as usize) as u32 };
        let mut all = self.own.query(sensor, metric, from, to, limit)?;
        for a in self.others(ask, next_page)? {
            if let Answer::Samples(s) = a {
                all.extend(s);
            }
        }
        // Stable: of two at one time, this collector's comes first and stays.
        all.sort_by_key(|s| s.ts_ms);
        all.dedup_by_key(|s| s.ts_ms);
        all.truncate(limit);
        Ok(all)
    }

    fn last(&self, sensor: &str, metric: &str) -> Result<Option<Sample>, StoreError> {
        let mut newest = self.own.last(sensor, metric)?;
        for a in self.others(Ask::Last { sensor: sensor.into(), metric: metric.into() }, one_page)? {
            if let Answer::Last(Some(s)) = a {
                if newest.is_none_or(|n| s.ts_ms > n.ts_ms) {
                    newest = Some(s);
                }
            }
        }
        Ok(newest)
    }

    /// Every series any store holds; those of a collector that does not
    /// answer are missing (logged), as this cannot fail.
    fn series(&self) -> Vec<(SensorId, Metric)> {
        let mut all: BTreeSet<(SensorId, Metric)> = self.own.series().into_iter().collect();
        for (peer, got) in self.peers.ask(Ask::Series { after: None }, next_page) {
            match got {
                Ok(pages) => all.extend(pages.into_iter().flat_map(|a| if let Answer::Series(s) = a { s } else { Vec::new() })),
                Err(e) => tracing::warn!(collector = peer, "the series in another collector's store are left out: {e}"),
            }
        }
        all.into_iter().collect()
    }

    fn first_ts(&self, sensor: &str, metric: &str) -> Result<Option<i64>, StoreError> {
        let mut first = self.own.first_ts(sensor, metric)?;
        for a in self.others(Ask::First { sensor: sensor.into(), metric: metric.into() }, one_page)? {
            if let Answer::First(Some(t)) = a {
                first = Some(first.map_or(t, |f| f.min(t)));
            }
        }
        Ok(first)
    }

    fn roll_up(&self) -> Result<u64, StoreError> {
        self.own.roll_up()
    }
    fn roll_up_ended(&self, until_ms: i64) -> Result<u64, StoreError> {
        self.own.roll_up_ended(until_ms)
    }
    /// The others roll their own up when asked for rollups.
    fn roll_up_series(&self, sensor: &str, metric: &str) -> Result<u64, StoreError> {
        self.own.roll_up_series(sensor, metric)
    }
    fn pack(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.own.pack(now_ms)
    }

    /// Each bucket merged over the stores: a series that moved within an
    /// hour has that hour's samples in two.
    fn rollups(&self, sensor: &str, metric: &str, level: Level, from: i64, to: i64) -> Result<Vec<Rollup>, StoreError> {
        let mut buckets: BTreeMap<i64, Rollup> = self.own.rollups(sensor, metric, level, from, to)?.into_iter().map(|r| (r.start_ms, r)).collect();
        for a in self.others(Ask::Rollups { sensor: sensor.into(), metric: metric.into(), level, from, to }, next_page)? {
            if let Answer::Rollups(rs) = a {
                for r in rs {
                    buckets.entry(r.start_ms).and_modify(|b| b.merge(&r)).or_insert(r);
                }
            }
        }
        Ok(buckets.into_values().collect())
    }

    fn expire(&self, now_ms: i64, keep: &dyn Fn(&str, &str) -> Keep) -> Result<Expired, StoreError> {
        self.own.expire(now_ms, keep)
    }
    fn size_on_disk(&self) -> u64 {
        self.own.size_on_disk()
    }
    fn bind(&self, bindings: &[(SensorId, shared::GatewayId)]) -> Result<(), StoreError> {
        self.own.bind(bindings)
    }
    fn bindings(&self) -> Result<Vec<(SensorId, shared::GatewayId)>, StoreError> {
        self.own.bindings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use shared::{Quality, Reading, Seq};

    fn store_with(n: usize) -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let readings: Vec<Reading> = (0..n)
            .map(|i| Reading { seq: Seq(i as u64 + 1), sensor: "wl-1".into(), metric: "level".into(), ts_ms: 1_000 * i as i64, value: i as f64, quality: Quality::Good })
            .collect();
        store.write(&Write { batches: vec![("gw".into(), Arc::new(readings))], ..Default::default() }).unwrap();
        (dir, store)
    }

    /// Every sample of every page, as `CityStore` gathers them from one collector.
    async fn gathered(store: &RedbStore, first: Ask) -> Vec<Sample> {
        let pages = pages(|q| std::future::ready(Ok(answer(store, q))), first, next_page).await.unwrap();
        pages.into_iter().flat_map(|a| if let Answer::Samples(s) = a { s } else { panic!("{a:?}") }).collect()
    }

    #[tokio::test]
    async fn a_long_series_comes_in_pages_each_sample_once_up_to_the_limit() {
        let n = 2 * PAGE + 100;
        let (_dir, store) = store_with(n);
        let ask = |from: i64, limit: u32| Ask::Samples { sensor: "wl-1".into(), metric: "level".into(), from, to: i64::MAX, limit };
        let all = gathered(&store, ask(0, u32::MAX)).await;
        assert_eq!(all.len(), n);
        assert!(all.windows(2).all(|w| w[1].ts_ms == w[0].ts_ms + 1_000), "in order, none twice, none skipped");
        assert_eq!(gathered(&store, ask(0, PAGE as u32 + 7)).await.len(), PAGE + 7, "a limit over a page");
        assert_eq!(gathered(&store, ask(1_000 * PAGE as i64, 10)).await.first().map(|s| s.value), Some(PAGE as f64), "from a time");
    }

    #[tokio::test]
    async fn a_collector_that_fails_to_answer_says_why() {
        let failed = pages(|_| std::future::ready(Ok(Answer::Failed("store at /x: gone".into()))), Ask::Last { sensor: "wl-1".into(), metric: "level".into() }, one_page).await;
        assert_eq!(failed.unwrap_err(), "store at /x: gone");
    }
}
