//! API access: bearer tokens with roles, kept as SHA-256 hashes, checked by
//! one middleware in front of every route; every write is audited.
//!
//! With no `[[auth.token]]` the API is open, which the config allows only on
//! loopback (see `config::CollectorConfig::validate`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;
use crate::audit::{AuditEntry, AuditLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything, follow the streams.
    Viewer,
    /// And acknowledge and resolve alerts.
    Operator,
    /// And change rules, read the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

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
}

impl Access {
    pub fn new(cfg: Option<&AuthConfig>, audit: Arc<AuditLog>) -> Access {
        Access { tokens: Arc::new(cfg.map(|c| c.token.clone()).unwrap_or_default()), audit }
    }

    pub fn open(&self) -> bool {
        self.tokens.is_empty()
    }

    fn caller(&self, token: &str) -> Option<Caller> {
        self.tokens.iter().find(|t| shared::auth::matches_sha256(token, &t.sha256)).map(|t| Caller { name: t.name.clone(), role: t.role })
    }
}

/// The role a request needs, or None for the public page, its assets and the health check.
fn needed(method: &Method, path: &str) -> Option<Role> {
    if method == Method::GET && (path == "/" || path.starts_with("/assets/") || path == "/healthz") {
        return None;
    }
    Some(match (method.as_str(), path) {
        ("GET", "/api/v1/audit") => Role::Admin,
        ("GET", _) => Role::Viewer,
        ("POST", p) if p.starts_with("/api/v1/alerts/") => Role::Operator,
        _ => Role::Admin,
    })
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

pub async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let Some(role) = needed(&method, &path) else { return next.run(req).await };
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
    let entry = AuditEntry { ts_ms: shared::now_ms(), who: caller.name, role: caller.role, method: method.to_string(), path, body: what, status: resp.status().as_u16() };
    if let Err(e) = access.audit.record(entry) {
        tracing::error!("audit log: {e}");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_the_readme_documents() {
        assert_eq!(needed(&Method::GET, "/"), None);
        assert_eq!(needed(&Method::GET, "/assets/app.js"), None);
        assert_eq!(needed(&Method::GET, "/api/v1/stream"), Some(Role::Viewer));
        assert_eq!(needed(&Method::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(needed(&Method::POST, "/api/v1/alerts/3/ack"), Some(Role::Operator));
        assert_eq!(needed(&Method::POST, "/api/v1/rules"), Some(Role::Admin));
        assert_eq!(needed(&Method::DELETE, "/api/v1/rules/x"), Some(Role::Admin));
        assert_eq!(needed(&Method::GET, "/api/v1/audit"), Some(Role::Admin));
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
