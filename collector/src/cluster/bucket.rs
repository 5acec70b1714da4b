//! The cluster's buckets of work state (delivery progress, open alerts):
//! key-value stores replicated like the log and kept as long as it keeps
//! batches, keyed by partition first so a collector taking a partition over
//! reads just that partition's part.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use futures_util::StreamExt as _;

use super::log::Link;

/// The bucket `name`, made if it is missing.
pub async fn open(js: &jetstream::Context, link: &Link, name: &str) -> Result<kv::Store, async_nats::Error> {
    Ok(match js.get_key_value(name).await {
        Ok(s) => s,
        Err(_) => js.create_key_value(kv::Config { bucket: name.into(), history: 1, max_age: link.keep(), num_replicas: link.replicas(), ..Default::default() }).await?,
    })
}

/// The current value of every key of bucket `name` under `<p>.`, each with
/// the rest of its key. Deleted keys have none.
pub async fn partition(js: &jetstream::Context, link: &Link, name: &str, p: u32) -> Result<Vec<(String, bytes::Bytes)>, async_nats::Error> {
    open(js, link, name).await?;
    let stream = js.get_stream(format!("KV_{name}")).await?;
    let prefix = format!("$KV.{name}.{p}.");
    let mut reader = stream
        .create_consumer(consumer::pull::OrderedConfig { filter_subject: format!("{prefix}>"), deliver_policy: consumer::DeliverPolicy::LastPerSubject, ..Default::default() })
        .await?;
    let mut left = reader.info().await?.num_pending;
    let mut out = Vec::new();
    let mut messages = reader.messages().await?;
    while left > 0 {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.map_err(|_| format!("reading {name}: no answer within 10 s"))?;
        let m = m.ok_or_else(|| format!("reading {name}: the consumer ended"))??;
        left -= 1;
        let deleted = m.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_some_and(|op| op.as_str() != "PUT");
        if let (false, Some(rest)) = (deleted, m.subject.as_str().strip_prefix(&prefix)) {
            out.push((rest.to_string(), m.payload.clone()));
        }
    }
    Ok(out)
}
