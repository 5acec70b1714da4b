//! The audit log: every write through the API (who, what, when, outcome),
//! durable before the next request is answered, queryable by admins.

use serde::{Deserialize, Serialize};

use crate::auth::Role;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts_ms: i64,
    /// The token's name (`anonymous` when the API is open).
    pub who: String,
    pub role: Role,
    pub method: String,
    pub path: String,
    /// The request body, up to 1 KiB.
    pub body: String,
    /// The HTTP status the request was answered with.
    pub status: u16,
}

pub struct AuditLog {
    db: sled::Db,
    tree: sled::Tree,
}

impl AuditLog {
    pub fn open(db: &sled::Db) -> Result<AuditLog, String> {
        Ok(AuditLog { db: db.clone(), tree: db.open_tree("audit").map_err(|e| format!("audit log: {e}"))? })
    }

    pub fn record(&self, e: AuditEntry) -> Result<(), String> {
        let id = self.db.generate_id().map_err(|e| e.to_string())?;
        self.tree.insert(id.to_be_bytes(), serde_json::to_vec(&e).expect("entry serializes")).map_err(|e| e.to_string())?;
        self.db.flush().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Newest first, at most `limit`, only entries at or after `since_ms`.
    pub fn recent(&self, limit: usize, since_ms: i64) -> Result<Vec<AuditEntry>, String> {
        let mut out = Vec::new();
        for item in self.tree.iter().rev() {
            let (_, v) = item.map_err(|e| e.to_string())?;
            let e: AuditEntry = serde_json::from_slice(&v).map_err(|e| format!("stored audit entry: {e}"))?;
            if e.ts_ms < since_ms || out.len() >= limit {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }
}
