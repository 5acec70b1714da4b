//! Where alerts (open and history) and API-made rules are kept, so a restart
//! neither forgets an alert nor fires it twice. Behind a trait like the
//! time-series store; sled underneath.

use std::path::Path;

use super::{Alert, Rule};

pub trait AlertStore: Send + Sync {
    fn save_alert(&self, alert: &Alert) -> Result<(), String>;
    fn alerts(&self) -> Result<Vec<Alert>, String>;
    fn save_rule(&self, rule: &Rule) -> Result<(), String>;
    fn delete_rule(&self, id: &str) -> Result<(), String>;
    fn rules(&self) -> Result<Vec<Rule>, String>;
}

pub struct SledAlertStore {
    db: sled::Db,
    alerts: sled::Tree,
    rules: sled::Tree,
}

impl SledAlertStore {
    pub fn open(path: &Path) -> Result<SledAlertStore, String> {
        let err = |e: sled::Error| format!("alert store at {}: {e}", path.display());
        std::fs::create_dir_all(path).map_err(|e| format!("alert store at {}: {e}", path.display()))?;
        let db = sled::Config::new().path(path).open().map_err(err)?;
        Ok(SledAlertStore { alerts: db.open_tree("alerts").map_err(err)?, rules: db.open_tree("rules").map_err(err)?, db })
    }

    /// The database, for the webhook outbox that shares it.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn sync(&self) -> Result<(), String> {
        self.db.flush().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Every JSON value of a tree, in key order.
fn read_all<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &str) -> Result<Vec<T>, String> {
    tree.iter()
        .map(|item| {
            let (_, v) = item.map_err(|e| e.to_string())?;
            serde_json::from_slice(&v).map_err(|e| format!("stored {what}: {e}"))
        })
        .collect()
}

impl AlertStore for SledAlertStore {
    fn save_alert(&self, alert: &Alert) -> Result<(), String> {
        let json = serde_json::to_vec(alert).expect("alert serializes");
        self.alerts.insert(alert.id.to_be_bytes(), json).map_err(|e| e.to_string())?;
        self.sync()
    }

    fn alerts(&self) -> Result<Vec<Alert>, String> {
        read_all(&self.alerts, "alert")
    }

    fn save_rule(&self, rule: &Rule) -> Result<(), String> {
        self.rules.insert(rule.id.as_bytes(), serde_json::to_vec(rule).expect("rule serializes")).map_err(|e| e.to_string())?;
        self.sync()
    }

    fn delete_rule(&self, id: &str) -> Result<(), String> {
        self.rules.remove(id.as_bytes()).map_err(|e| e.to_string())?;
        self.sync()
    }

    fn rules(&self) -> Result<Vec<Rule>, String> {
        read_all(&self.rules, "rule")
    }
}
