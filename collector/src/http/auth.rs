//! API access: bearer tokens with roles, kept as SHA-256 hashes, checked by
//! a guard the router puts in front of each route with the role it needs;
//! every write is audited.
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
pub use super::role::Role;
use super::ApiError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub sha256: String,
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

/// Who made a request, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Clone)]
pub struct Access {
    tokens: Arc<Vec<TokenEntry>>,
    audit: Arc<AuditLog>,
    clock: shared::clock::SharedClock,
}

impl Access {
    pub fn new(cfg: Option<&AuthConfig>, audit: Arc<AuditLog>, clock: shared::clock::SharedClock) -> Access {
        Access { tokens: Arc::new(cfg.map(|c| c.token.clone()).unwrap_or_default()), audit, clock }
    }

    pub fn open(&self) -> bool {
        self.tokens.is_empty()
    }

    fn caller(&self, token: &str) -> Option<Caller> {
        self.tokens.iter().find(|t| shared::auth::matches_sha256(token, &t.sha256)).map(|t| Caller { name: t.name.clone(), role: t.role })
    }
}

fn bearer(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return h.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    // EventSource cannot send headers: the dashboard's stream passes the token in the query.
    if req.method() == Method::GET {
        let q = req.uri().query().unwrap_or("");
        return q.split('&').find_map(|kv| kv.strip_prefix("access_token=")).map(|t| t.to_string());
    }
    None
}

/// Largest request body the API reads (rules and acks are far smaller).
pub const MAX_BODY: usize = 64 * 1024;

/// Lets a request through when its caller has `role` (set per route by the
/// router); audits every write.
pub async fn guard(State((access, role)): State<(Access, Role)>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let caller = if access.open() {
        Caller { name: "anonymous".into(), role: Role::Admin }
    } else {
        match bearer(&req).and_then(|t| access.caller(&t)) {
            Some(c) => c,
            None => {
                let mut r = ApiError(StatusCode::UNAUTHORIZED, "missing or unknown bearer token (Authorization: Bearer TOKEN)".into()).into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
                return r;
            }
        }
    };
    if caller.role < role {
        tracing::warn!(who = %caller.name, role = caller.role.as_str(), %method, %path, "refused: needs {}", role.as_str());
        return ApiError(StatusCode::FORBIDDEN, format!("token `{}` has role {}; {method} {path} needs {}", caller.name, caller.role.as_str(), role.as_str())).into_response();
    }
    if method == Method::GET {
        return next.run(req).await;
    }
    // A write: keep its body for the audit log, then let it through.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {MAX_BODY} bytes")).into_response(),
    };
    let what = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned();
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    let entry = AuditEntry { ts_ms: access.clock.now_ms(), who: caller.name, role: caller.role, method: method.to_string(), path, body: what, status: resp.status().as_u16() };
    if let Err(e) = access.audit.record(entry) {
        tracing::error!("audit log: {e}");
    }
    resp
}
