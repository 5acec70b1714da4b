//! citysense-collector, the city brain: receives batches from many gateways,
//! stores each reading exactly once, evaluates alert rules and serves the
//! catalogue, gateways, series, alerts and live feeds.
//!
//! Data flows one way through the modules, in this order:
//! `mqtt` (broker, grants, the collector's connections, routing) →
//! `ingest` (decode, verify, dedup, store, ack) → `store` (time series,
//! rollups, retention) and `rules` (engine, alert lifecycle) → `feed` (MQTT,
//! webhooks) and `sink` (InfluxDB) → `http` (API, SSE stream, dashboard).
//! `registry` is the live view ingest and the MQTT routing write and `http`
//! reads; `messages` holds what components send each other, so no producer
//! depends on its consumer; `catalogue` is the data-resource catalogue every
//! stage reads; `config` gathers each component's settings; `collector`
//! builds and joins them. `sta` serves all of it again as OGC SensorThings.

pub mod alert;
pub mod catalogue;
pub mod cluster;
mod collector;
pub mod config;
pub mod conn_limit;
pub mod district;
pub mod feed;
pub mod http;
pub mod incident;
pub mod ingest;
pub mod liveness;
pub mod messages;
pub mod mqtt;
pub mod registry;
pub mod rules;
mod series_ref;
pub mod sink;
pub mod sta;
pub mod store;
pub mod tls;

pub use collector::{Collector, Parts, StartError};
pub use mqtt::INTERNAL_USER;

/// Logging for the binaries: `RUST_LOG` wins; otherwise info, with rumqttd's
/// error-per-disconnect noise silenced.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttd=off".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Waits for SIGINT or SIGTERM: how both binaries that run a collector stop.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
