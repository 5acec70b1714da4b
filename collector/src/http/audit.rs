//! The audit log: every write through the API (who, what, when, outcome),
//! refused ones included,
//! durable before the next request is answered, queryable by admins.

use serde::{Deserialize, Serialize};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::query::{parse_time, Params};
use super::role::Role;
use super::{bad, ApiError, AppState};
use crate::rules::store::AlertDb;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts_ms: i64,
    /// The token's name (`anonymous` when the API is open; `(no token)` or
    /// `(unknown token)` for a refused request without a valid one).
    pub who: String,
    /// The token's role; null when no valid token was given.
    pub role: Option<Role>,
    pub method: String,
    pub path: String,
    /// The request body, up to 1 KiB.
    pub body: String,
    /// The HTTP status the request was answered with.
    pub status: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Engine(#[from] sled::Error),
    #[error("audit log: stored entry unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub struct AuditLog {
    /// The alert store's database, whose `sync` makes an entry durable.
    db: AlertDb,
    tree: sled::Tree,
}

impl AuditLog {
    pub fn open(db: &AlertDb) -> Result<AuditLog, AuditError> {
        Ok(AuditLog { db: db.clone(), tree: db.open_tree("audit")? })
    }

    pub fn record(&self, e: AuditEntry) -> Result<(), AuditError> {
        let id = self.db.generate_id()?;
        self.tree.insert(id.to_be_bytes(), serde_json::to_vec(&e).expect("entry serializes"))?;
        // sled's flush alone is only sync_file_range (spacejam/sled#1452).
        self.db.sync()?;
        Ok(())
    }

    /// Newest first, at most `limit`, only entries at or after `since_ms`.
    pub fn recent(&self, limit: usize, since_ms: i64) -> Result<Vec<AuditEntry>, AuditError> {
        let mut out = Vec::new();
        for item in self.tree.iter().rev() {
            let (_, v) = item?;
            let e: AuditEntry = serde_json::from_slice(&v)?;
            if e.ts_ms < since_ms || out.len() >= limit {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }
}

/// `GET /api/v1/audit?limit=N&from=T`: API writes, newest first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<String>,
    from: Option<String>,
}

pub async fn audit(State(st): State<AppState>, Params(q): Params<AuditQuery>) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.map(|l| l.parse::<usize>().map_err(|_| bad(format!("limit `{l}` is not a number")))).transpose()?.unwrap_or(100);
    let from = q.from.map(|s| parse_time("from", &s, st.clock.now_ms())).transpose()?.unwrap_or(i64::MIN);
    st.audit.recent(limit, from).map(Json).map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}
