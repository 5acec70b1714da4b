//! API access: bearer tokens with roles, kept as SHA-256 hashes, checked by
//! a guard the router puts in front of each route with the role it needs,
//! after the request passed the `gate` (JSON writes, origin, host); every
//! write is audited, refused ones included, and every refusal counted.
//!
//! With no `[[auth.token]]` the API is open, which the config allows only on
//! loopback (see `config::CollectorConfig::validate`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::audit::{AuditEntry, AuditLog};
use super::gate::{Origins, Refusal, Refusals};
pub use super::role::Role;
use super::ApiError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub sha256: String,
    /// The `[[department]]` an operator acts for (its incidents only).
    #[serde(default)]
    pub department: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub token: Vec<TokenEntry>,
}

impl AuthConfig {
    pub fn validate(&self, p: &mut Vec<shared::config::Problem>) {
        use shared::config::Problem;
        let mut names: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, t) in self.token.iter().enumerate() {
            if t.sha256.len() != 64 || shared::auth::unhex(&t.sha256).is_none() {
                p.push(Problem::new(format!("auth.token[{i}].sha256"), "must be 64 hex digits (citysense-collector token prints one)"));
            }
            if let Some(first) = names.insert(&t.name, i) {
                p.push(Problem::new(format!("auth.token[{i}].name"), format!("`{}` is already auth.token[{first}]", t.name)));
            }
        }
    }
}

/// A bearer token that no `[[auth.token]]` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown bearer token (Authorization: Bearer TOKEN)")]
pub struct UnknownToken;

/// Who made a request, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The department its token acts for, if any.
    pub department: Option<String>,
}

#[derive(Clone)]
pub struct Access {
    tokens: Arc<Vec<TokenEntry>>,
    audit: Arc<AuditLog>,
    clock: shared::clock::SharedClock,
    origins: Arc<Origins>,
    /// Refused requests by reason, for `/metrics`.
    pub refusals: Arc<Refusals>,
}

impl Access {
    pub fn new(cfg: Option<&AuthConfig>, http: &super::settings::HttpConfig, audit: Arc<AuditLog>, clock: shared::clock::SharedClock) -> Access {
        let tokens = Arc::new(cfg.map(|c| c.token.clone()).unwrap_or_default());
        Access { tokens, audit, clock, origins: Arc::new(Origins::new(http)), refusals: Arc::new(Refusals::default()) }
    }

    pub fn open(&self) -> bool {
        self.tokens.is_empty()
    }

    fn caller(&self, token: &str) -> Option<Caller> {
        self.tokens.iter().find(|t| shared::auth::matches_sha256(token, &t.sha256)).map(|t| Caller { name: t.name.clone(), role: t.role, department: t.department.clone() })
    }
}

/// The path that takes its token in the query.
pub const STREAM_PATH: &str = "/api/v1/stream";

fn bearer(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return h.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    // EventSource cannot send headers: the dashboard's stream passes the token
    // in the query. Only there: a token in any other URL ends up in proxy logs and history.
    if req.method() == Method::GET && req.uri().path() == STREAM_PATH {
        let q = req.uri().query().unwrap_or("");
        return q.split('&').find_map(|kv| kv.strip_prefix("access_token=")).map(|t| t.to_string());
    }
    None
}

/// Largest request body the API reads (rules and acks are far smaller).
pub const MAX_BODY: usize = 64 * 1024;

/// Lets a request through when it passes the gate and its caller has
/// `role` (set per route by the router); audits every write, refused or not.
pub async fn guard(State((access, role)): State<(Access, Role)>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let write = method != Method::GET && method != Method::HEAD;
    // Who asked, as far as known: refusals of writes are audited under it.
    let token = bearer(&req);
    let known = token.as_deref().and_then(|t| access.caller(t));
    let (who, who_role) = match (&known, &token, access.open()) {
        (_, _, true) => ("anonymous".to_string(), Some(Role::Admin)),
        (Some(c), _, _) => (c.name.clone(), Some(c.role)),
        (None, Some(_), _) => ("(unknown token)".to_string(), None),
        (None, None, _) => ("(no token)".to_string(), None),
    };
    let refuse = |why: Refusal, status: StatusCode, msg: String, body: String| {
        access.refusals.add(why);
        tracing::warn!(%who, %method, %path, reason = why.label(), "HTTP request refused: {msg}");
        if write {
            access.record(AuditEntry {
                ts_ms: access.clock.now_ms(),
                who: who.clone(),
                role: who_role,
                method: method.to_string(),
                path: path.clone(),
                body,
                status: status.as_u16(),
            });
        }
        let mut r = ApiError(status, msg).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    };
    if let Err((why, status, msg)) = access.origins.check(&req, access.open()) {
        return refuse(why, status, msg, String::new());
    }
    let caller = match (access.open(), known.clone()) {
        (true, _) => Caller { name: "anonymous".into(), role: Role::Admin, department: None },
        (false, Some(c)) => c,
        (false, None) => return refuse(Refusal::Unauthorized, StatusCode::UNAUTHORIZED, "missing or unknown bearer token (Authorization: Bearer TOKEN)".into(), String::new()),
    };
    if caller.role < role {
        let msg = format!("token `{}` has role {}; {method} {path} needs {}", caller.name, caller.role.as_str(), role.as_str());
        return refuse(Refusal::Forbidden, StatusCode::FORBIDDEN, msg, String::new());
    }
    if !write {
        return next.run(req).await;
    }
    // A write: keep its body for the audit log, then let it through.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return refuse(Refusal::TooLarge, StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {MAX_BODY} bytes"), String::new()),
    };
    let what = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned();
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    access.record(AuditEntry {
        ts_ms: access.clock.now_ms(),
        who: caller.name,
        role: Some(caller.role),
        method: method.to_string(),
        path,
        body: what,
        status: resp.status().as_u16(),
    });
    resp
}

impl Access {
    /// For a route anyone may call that shows more to a token holder (the
    /// SensorThings endpoint): the caller a request's bearer token names, None
    /// without one (or on an API without tokens); an unknown one is counted as refused.
    pub fn token_holder(&self, req: &Request) -> Result<Option<Caller>, UnknownToken> {
        let Some(token) = bearer(req).filter(|_| !self.open()) else { return Ok(None) };
        match self.caller(&token) {
            Some(c) => Ok(Some(c)),
            None => {
                self.refusals.add(Refusal::Unauthorized);
                Err(UnknownToken)
            }
        }
    }

    fn record(&self, entry: AuditEntry) {
        if let Err(e) = self.audit.record(entry) {
            tracing::error!("audit log: {e}");
        }
    }
}
