//! OGC SensorThings API 1.1 (OGC 18-088), read-only, at `/sta/v1.1/`: the
//! Sensing Core model over the catalogue, the live registry and the store,
//! with the query options of OData, and MQTT receiving updates. It reads
//! what the rest of the collector keeps and writes nothing.
//!
//! `ids` (entity sets, relations, ids) · `model` (citysense as Things,
//! Datastreams, …) and `cache` (the model built once per change of the
//! catalogue or the set of series) · `path` and `resolve` (the URL path) ·
//! `options` and `filter` (the query options and the expression language) ·
//! `observations` (reading the store, bounded) · `render` (JSON) · `policy`
//! (open data, tokens, rate) · `mqtt` (updates) · `settings` (`[sta]`).
//! Documented in README (SensorThings) and `docs/http-api.md`.

pub mod cache;
pub mod error;
pub mod filter;
pub mod ids;
pub mod model;
pub mod mqtt;
pub mod observations;
pub mod options;
pub mod path;
pub mod policy;
pub mod render;
pub mod resolve;
pub mod settings;
pub mod time;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use crate::http::AppState;
use error::StaError;
use ids::Set;
use model::Graph;
use observations::{Budget, Reader};
use policy::{Audience, Bucket};
use render::Renderer;
use resolve::Target;
use settings::StaConfig;

/// Where the service root is mounted.
pub const ROOT: &str = "/sta/v1.1";

/// The conformance classes this endpoint implements, as the service root lists them.
pub const CONFORMANCE: [&str; 4] = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
    MQTT_CLASS,
];
pub const MQTT_CLASS: &str = "http://www.opengis.net/spec/iot_sensing/1.1/req/receive-updates-via-mqtt/receive-updates";

/// The endpoint's settings and state across requests.
pub struct Sta {
    pub config: StaConfig,
    anonymous: Bucket,
    /// Where MQTT clients subscribe (the broker agents use).
    mqtt_url: String,
    pub models: cache::ModelCache,
}

impl Sta {
    pub fn new(config: StaConfig, mqtt_url: String, clock: shared::clock::SharedClock) -> Sta {
        Sta { anonymous: Bucket::new(config.anonymous_rate, clock), config, mqtt_url, models: cache::ModelCache::default() }
    }
}

/// Whether the API is served over TLS, for the links it writes (set by `http::serve`).
#[derive(Debug, Clone, Copy)]
pub struct Tls(pub bool);

fn json_response(v: &Json) -> Response {
    let mut r = (StatusCode::OK, serde_json::to_string(v).expect("JSON serializes")).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Every `GET /sta/v1.1/…`.
pub async fn serve(State(st): State<AppState>, req: Request) -> Response {
    let audience = match st.access.token_holder(&req) {
        Ok(Some(_)) => Audience::Viewer,
        Ok(None) => Audience::Public,
        Err(unknown) => {
            let msg = format!("{unknown}; without a token only open data is served");
            let mut r = (StatusCode::UNAUTHORIZED, axum::Json(json!({ "code": 401, "type": "error", "error": msg }))).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    let sta = st.sta.clone();
    if audience == Audience::Public && !sta.anonymous.admit() {
        return StaError::RateLimited(sta.config.anonymous_rate).into_response();
    }
    let tls = req.extensions().get::<Tls>().is_some_and(|t| t.0);
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    let base = format!("{}://{host}{ROOT}", if tls { "https" } else { "http" });
    let raw_path = req.uri().path().strip_prefix(ROOT).unwrap_or("").trim_start_matches('/').to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let answer = tokio::task::spawn_blocking(move || answer(&st, &sta, audience, &base, &raw_path, &query)).await;
    match answer {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if e.status().is_server_error() {
                tracing::warn!("SensorThings: {e}");
            }
            e.into_response()
        }
        Err(e) => {
            tracing::error!("SensorThings query task: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "query failed").into_response()
        }
    }
}

fn answer(st: &AppState, sta: &Sta, audience: Audience, base: &str, raw_path: &str, query: &str) -> Result<Response, StaError> {
    let budget = Budget::new(sta.config.deadline.0);
    let decoded = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| StaError::Path { path: raw_path.to_string(), reason: "not UTF-8 once percent-decoded".into() })?
        .into_owned();
    let segments = path::parse(&decoded)?;
    let opts = options::Options::from_query(query)?;
    if segments.is_empty() {
        return Ok(json_response(&service_root(base, &sta.mqtt_url)));
    }
    let model = sta.models.get(audience, &st.catalogue, &st.registry, st.store.as_ref());
    let graph = Graph { model: &model, store: st.store.as_ref(), registry: &st.registry };
    let reader = Reader { graph: &graph, budget, now_ms: st.clock.now_ms(), max_sort: sta.config.max_sort };
    let r = Renderer { reader, base: base.to_string(), default_top: sta.config.default_top, max_top: sta.config.max_top };
    let resolved = resolve::resolve(&graph, &segments)?;
    let no_shaping = |what: &str| -> Result<(), StaError> {
        if opts.select.is_some() || !opts.expand.is_empty() {
            return Err(StaError::Option { option: if opts.select.is_some() { "$select" } else { "$expand" }.into(), reason: format!("does not apply to {what}") });
        }
        Ok(())
    };
    let out = match resolved.target {
        Target::Collection { set, source } => {
            if resolved.reference {
                no_shaping("$ref")?;
            }
            r.collection(set, &source, &opts, &decoded, resolved.reference)?
        }
        Target::Entity(e) if resolved.reference => {
            no_shaping("$ref")?;
            json!({ "@iot.selfLink": r.self_link(&e) })
        }
        Target::Entity(e) => {
            render::check_options(Graph::set_of(&e), &opts)?;
            r.entity(&e, &opts)?
        }
        Target::Property { entity, name, raw } => {
            no_shaping("a property")?;
            let v = graph.properties(&entity).remove(&name).unwrap_or(Json::Null);
            if raw {
                let text = match &v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut resp = (StatusCode::OK, text).into_response();
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                return Ok(resp);
            }
            json!({ name: v })
        }
    };
    Ok(json_response(&out))
}

fn service_root(base: &str, mqtt_url: &str) -> Json {
    let value: Vec<Json> = Set::ALL.iter().map(|s| json!({ "name": s.name(), "url": format!("{base}/{}", s.name()) })).collect();
    json!({
        "value": value,
        "serverSettings": {
            "conformance": CONFORMANCE,
            MQTT_CLASS: { "endpoints": [mqtt_url] },
        }
    })
}

/// The MQTT publisher's links: the same root the HTTP API serves on `addr`.
pub fn base_url(addr: std::net::SocketAddr, tls: bool) -> String {
    format!("{}://{addr}{ROOT}", if tls { "https" } else { "http" })
}
