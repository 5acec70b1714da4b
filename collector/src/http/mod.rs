//! The HTTP side, last on the data path: the JSON API (one file per
//! resource), `/metrics`, the SSE stream and the dashboard page, behind
//! `auth` (roles set per route) and the TLS front. Bad input answers 4xx with
//! `{"error": "…"}`, never 500. Documented in `docs/http-api.md`.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod departments;
pub mod districts;
pub mod export;
pub mod gate;
pub mod gateways;
pub mod health;
pub mod incidents;
pub mod metrics;
pub mod query;
pub mod role;
pub mod rules;
pub mod sensors;
pub mod series;
pub mod server;
pub mod settings;
pub mod silences;
pub mod stream;
pub mod web;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::catalogue::SensorEntry;
use crate::registry::Registry;
use crate::store::Store;
use role::Role;

#[derive(Clone)]
pub struct AppState {
    /// Whether this collector publishes the feeds (always, outside cluster mode).
    pub speaking: crate::cluster::speaker::Speaking,
    /// The partitions of the batch log this collector holds, when the cluster shares it.
    pub holdings: Option<Arc<crate::cluster::holdings::Holdings>>,
    /// The live view shared with the cluster, when it shares the log by partition.
    pub view: Option<Arc<crate::cluster::view::ViewStats>>,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub counters: Arc<crate::ingest::Counters>,
    pub catalogue: Arc<Vec<SensorEntry>>,
    pub alerting: Arc<crate::rules::alerting::Alerting>,
    pub incidents: Arc<crate::incident::service::Incidents>,
    pub feed: crate::messages::Bus,
    /// What the live feeds dropped for slow consumers (`/metrics`).
    pub feed_stats: Arc<crate::feed::FeedStats>,
    pub started: std::time::Instant,
    /// Turns true when the collector stops: long-lived streams end on it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The InfluxDB sink's counters, when one is configured.
    pub sink: Option<Arc<crate::sink::SinkStats>>,
    pub lifecycle: Arc<crate::store::lifecycle::LifecycleStats>,
    pub access: crate::http::auth::Access,
    pub tls: Arc<crate::tls::TlsStats>,
    /// The MQTT front door's refusals.
    pub mqtt_front: Arc<crate::mqtt::front::FrontStats>,
    /// The HTTP connection caps (`http.max_connections`, `…_per_peer`).
    pub conn_limit: Arc<crate::conn_limit::ConnLimit>,
    pub audit: Arc<crate::http::audit::AuditLog>,
    pub clock: shared::clock::SharedClock,
    /// Operators' requests about delivery progress go to ingest.
    pub ingest: tokio::sync::mpsc::Sender<crate::messages::IngestControl>,
    /// Each component's heartbeat, for `/healthz`.
    pub liveness: crate::liveness::Liveness,
    /// Gateway ids the config knows: `[[gateway]]`s and those the catalogue names.
    pub known_gateways: Arc<std::collections::HashSet<String>>,
    /// The SensorThings endpoint (`crate::sta`).
    pub sta: Arc<crate::sta::Sta>,
    /// The city view: districts, indicators, the map (`crate::district`).
    pub city: Arc<crate::district::City>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {listen} (http.listen): {source}")]
    Listen { listen: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Serves the API and dashboard on `config.listen` (behind the TLS front
/// when configured) until `stop`; returns the address clients reach.
pub async fn serve(
    config: &settings::HttpConfig,
    state: AppState,
    tls_stats: Arc<crate::tls::TlsStats>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let plain_listen = if config.tls.is_some() { "127.0.0.1:0" } else { config.listen.as_str() };
    let listen_err = |source| HttpError::Listen { listen: config.listen.clone(), source };
    let listener = tokio::net::TcpListener::bind(plain_listen).await.map_err(listen_err)?;
    let mut addr = listener.local_addr().map_err(listen_err)?;
    let (limit, refusals) = (state.conn_limit.clone(), state.access.refusals.clone());
    // Under TLS the caps apply at the front, where the peers' addresses are
    // known; the plain listener behind it only ever sees loopback.
    let inner_limit = match &config.tls {
        Some(files) => {
            let tls = crate::tls::server_config(files, std::path::Path::new(""))?;
            addr = crate::tls::front(&config.listen, Some(tls), addr, "HTTP", tls_stats, crate::tls::Plain, Some(limit), stop.clone()).await?;
            None
        }
        None => Some(limit),
    };
    let tls = config.tls.is_some();
    let tiles = state.city.config.tile_origin();
    let app = router(state)
        .layer(axum::middleware::from_fn(move |req, next| server::security_headers(tls, req, next)))
        .layer(axum::middleware::from_fn(move |req, next| districts::allow_tiles(tiles.clone(), req, next)))
        .layer(axum::Extension(crate::sta::Tls(tls)));
    let task = tokio::spawn(server::run(listener, app, config.header_timeout.0, inner_limit, refusals, stop));
    Ok((addr, task))
}

/// Every route with the role it needs: the page, its assets and the health
/// check are public; reading needs a viewer, handling alerts an operator,
/// changing rules and reading the audit log an admin.
pub fn router(state: AppState) -> Router {
    let access = state.access.clone();
    let needs = |role: Role| axum::middleware::from_fn_with_state((access.clone(), role), auth::guard);
    Router::new()
        .route("/", get(web::index))
        .route("/assets/{*name}", get(web::asset))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics).route_layer(needs(Role::Viewer)))
        .route("/api/v1/sensors", get(sensors::sensors).route_layer(needs(Role::Viewer)))
        .route("/api/v1/sensors/page", get(districts::page).route_layer(needs(Role::Viewer)))
        .route("/api/v1/districts", get(districts::districts).route_layer(needs(Role::Viewer)))
        .route("/api/v1/map", get(districts::map).route_layer(needs(Role::Viewer)))
        .route("/api/v1/map/boundaries", get(districts::boundaries).route_layer(needs(Role::Viewer)))
        .route("/api/v1/gateways", get(gateways::gateways).route_layer(needs(Role::Viewer)))
        .route("/api/v1/sensors/{id}/gateway", put(gateways::move_sensor).route_layer(needs(Role::Admin)))
        .route("/api/v1/gateways/{id}/progress", get(gateways::progress).route_layer(needs(Role::Viewer)).merge(delete(gateways::reset_progress).route_layer(needs(Role::Admin))))
        .route("/api/v1/series", get(series::series).route_layer(needs(Role::Viewer)))
        .route("/api/v1/export", get(export::export).route_layer(needs(Role::Viewer)))
        .route("/api/v1/stream", get(stream::stream).route_layer(needs(Role::Viewer)))
        .route("/api/v1/alerts", get(alerts::alerts).route_layer(needs(Role::Viewer)))
        .route("/api/v1/alerts/{id}/ack", post(alerts::ack).route_layer(needs(Role::Operator)))
        .route("/api/v1/alerts/{id}/resolve", post(alerts::resolve).route_layer(needs(Role::Operator)))
        .route("/api/v1/rules", get(rules::rules).route_layer(needs(Role::Viewer)).merge(post(rules::add_rule).route_layer(needs(Role::Admin))))
        .route("/api/v1/rules/{id}", delete(rules::delete_rule).route_layer(needs(Role::Admin)))
        .route("/api/v1/audit", get(audit::audit).route_layer(needs(Role::Admin)))
        // Incidents: operators act on their department's, command on all (the handlers check which).
        .route("/api/v1/incidents", get(incidents::list).route_layer(needs(Role::Viewer)))
        .route("/api/v1/incidents/{id}", get(incidents::one).route_layer(needs(Role::Viewer)))
        .route("/api/v1/incidents/{id}/{action}", post(incidents::act).route_layer(needs(Role::Operator)))
        .route("/api/v1/silences", get(silences::list).route_layer(needs(Role::Viewer)).merge(post(silences::create).route_layer(needs(Role::Operator))))
        .route("/api/v1/silences/{id}", get(silences::one).route_layer(needs(Role::Viewer)).merge(delete(silences::delete).route_layer(needs(Role::Operator))))
        .route("/api/v1/departments", get(departments::list).route_layer(needs(Role::Viewer)))
        .route("/api/v1/departments/performance", get(departments::league).route_layer(needs(Role::Viewer)))
        .route("/api/v1/departments/{id}/performance", get(departments::performance).route_layer(needs(Role::Viewer)))
        // Open data for anyone, everything for a token holder: the handler decides (`sta::policy`).
        .route(crate::sta::ROOT, get(crate::sta::serve))
        .route("/sta/v1.1/", get(crate::sta::serve))
        .route("/sta/v1.1/{*path}", get(crate::sta::serve))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route; see docs/http-api.md".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(auth::MAX_BODY))
        .with_state(state)
}

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// A JSON body, with a 400 that says what is wrong instead of axum's default.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("body: {e}")))
}

impl From<crate::rules::AlertError> for ApiError {
    fn from(e: crate::rules::AlertError) -> ApiError {
        use crate::rules::AlertError::*;
        let status = match &e {
            NotFound(_) | NoRule(_) => StatusCode::NOT_FOUND,
            AlreadyResolved(_) | NotOpen(_) | RuleExists(_) => StatusCode::CONFLICT,
            Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}
