//! `GET /api/v1/stream?types=reading,alert,gateway&sensor=`: Server-Sent Events.
//! Event names are `reading`, `alert`, `gateway`, `incident`; a client that falls behind
//! gets a `lagged` event with how many it missed. Readings are the city's,
//! also where collectors share the batch log (`cluster::view`).

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::stream::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::query::Params;
use super::{bad, ApiError, AppState};
use crate::messages::FeedEvent;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    types: Option<String>,
    sensor: Option<String>,
    /// EventSource cannot send headers: the dashboard passes its token here
    /// (read by `auth`).
    #[serde(rename = "access_token")]
    _access_token: Option<String>,
}

pub async fn stream(State(st): State<AppState>, Params(q): Params<StreamQuery>) -> Result<impl IntoResponse, ApiError> {
    let types: Vec<String> = q.types.map(|t| t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    for t in &types {
        if !["reading", "alert", "gateway", "incident"].contains(&t.as_str()) {
            return Err(bad(format!("unknown type `{t}` in types; use reading, alert, gateway, incident")));
        }
    }
    let want = move |t: &str| types.is_empty() || types.iter().any(|x| x == t);
    let sensor = q.sensor.filter(|s| !s.is_empty());
    let mut rx = st.feed.subscribe();
    let stats = st.feed_stats.clone();
    let mut stop = st.shutdown.clone();
    let events = async_stream(move |tx| async move {
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = stop.changed() => return,
            };
            let out: Vec<Event> = match next {
                Ok(FeedEvent::Readings(rs) | FeedEvent::Elsewhere(rs)) if want("reading") => rs
                    .iter()
                    .filter(|r| sensor.as_deref().is_none_or(|s| s == r.sensor))
                    .map(|r| {
                        Event::default()
                            .event("reading")
                            .data(json!({"sensor": r.sensor, "metric": r.metric, "ts_ms": r.ts_ms, "value": r.value, "quality": r.quality}).to_string())
                    })
                    .collect(),
                Ok(FeedEvent::Alert(a) | FeedEvent::AlertElsewhere(a)) if want("alert") && sensor.as_deref().is_none_or(|s| s == a.alert.sensor) => {
                    vec![Event::default().event("alert").data(serde_json::to_string(&a).expect("alert serializes"))]
                }
                Ok(FeedEvent::Gateway { id, status, ts_ms }) if want("gateway") => {
                    vec![Event::default().event("gateway").data(json!({"id": id, "status": status, "ts_ms": ts_ms}).to_string())]
                }
                Ok(FeedEvent::Incident(news)) if want("incident") && sensor.is_none() => vec![Event::default().event("incident").data(news.json.as_str())],
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    crate::feed::FeedStats::add(&stats.sse_events, n);
                    vec![Event::default().event("lagged").data(json!({"missed": n}).to_string())]
                }
                Err(RecvError::Closed) => return,
            };
            for e in out {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// A stream fed by a task through a small channel: the task ends when the client goes.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Result<Event, Infallible>>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
