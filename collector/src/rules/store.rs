//! Where alerts (open and history) and API-made rules are kept, so a restart
//! neither forgets an alert nor fires it twice. Behind a trait like the
//! time-series store; sled underneath.

use std::path::Path;
use std::sync::Arc;

use super::{Alert, Rule};

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error("alert store at {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("alert store: {0}")]
    Engine(#[from] sled::Error),
    #[error("alert store: stored {what} unreadable: {source}")]
    Corrupt { what: &'static str, source: serde_json::Error },
}

pub trait AlertStore: Send + Sync {
    fn save_alert(&self, alert: &Alert) -> Result<(), AlertStoreError>;
    fn alerts(&self) -> Result<Vec<Alert>, AlertStoreError>;
    fn save_rule(&self, rule: &Rule) -> Result<(), AlertStoreError>;
    fn delete_rule(&self, id: &str) -> Result<(), AlertStoreError>;
    fn rules(&self) -> Result<Vec<Rule>, AlertStoreError>;
}

/// The alert store's sled database, shared by every tree in it (alerts,
/// rules, webhook deliveries, the audit log), with the one way to make a
/// change to any of them durable: `sync`. It derefs to the `sled::Db`.
#[derive(Clone)]
pub struct AlertDb {
    db: sled::Db,
    /// sled's log file, fsynced after each flush: on Linux sled 0.34 flushes
    /// with `sync_file_range`, which a power cut can undo (spacejam/sled#1452).
    log: Arc<std::fs::File>,
}

impl AlertDb {
    /// Makes every change so far durable: sled's flush, then an fsync of its log.
    pub fn sync(&self) -> sled::Result<()> {
        self.db.flush()?;
        self.log.sync_data().map_err(sled::Error::Io)
    }
}

impl std::ops::Deref for AlertDb {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

pub struct SledAlertStore {
    db: AlertDb,
    alerts: sled::Tree,
    rules: sled::Tree,
}

impl SledAlertStore {
    pub fn open(path: &Path) -> Result<SledAlertStore, AlertStoreError> {
        let open_err = |source| AlertStoreError::Open { path: path.display().to_string(), source };
        std::fs::create_dir_all(path).map_err(open_err)?;
        let db = sled::Config::new().path(path).open().map_err(|e| match e {
            sled::Error::Io(source) => open_err(source),
            other => AlertStoreError::Engine(other),
        })?;
        let (alerts, rules) = (db.open_tree("alerts")?, db.open_tree("rules")?);
        // sled never fsyncs the directories naming its files: a power cut
        // soon after the first start would take every alert and rule.
        let log = std::fs::File::open(path.join("db")).map_err(open_err)?;
        db.flush()?;
        log.sync_data().map_err(open_err)?;
        for dir in [Some(path), path.parent()].into_iter().flatten().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(open_err)?;
        }
        Ok(SledAlertStore { alerts, rules, db: AlertDb { db, log: Arc::new(log) } })
    }

    /// The database, for the webhook outbox and the audit log that share it
    /// (and make their changes durable with its `sync`).
    pub fn db(&self) -> &AlertDb {
        &self.db
    }

    fn sync(&self) -> Result<(), AlertStoreError> {
        Ok(self.db.sync()?)
    }
}

/// Every JSON value of a tree, in key order.
fn read_all<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &'static str) -> Result<Vec<T>, AlertStoreError> {
    tree.iter()
        .map(|item| {
            let (_, v) = item?;
            serde_json::from_slice(&v).map_err(|source| AlertStoreError::Corrupt { what, source })
        })
        .collect()
}

impl AlertStore for SledAlertStore {
    fn save_alert(&self, alert: &Alert) -> Result<(), AlertStoreError> {
        let json = serde_json::to_vec(alert).expect("alert serializes");
        self.alerts.insert(alert.id.to_be_bytes(), json)?;
        self.sync()
    }

    fn alerts(&self) -> Result<Vec<Alert>, AlertStoreError> {
        read_all(&self.alerts, "alert")
    }

    fn save_rule(&self, rule: &Rule) -> Result<(), AlertStoreError> {
        self.rules.insert(rule.id.as_bytes(), serde_json::to_vec(rule).expect("rule serializes"))?;
        self.sync()
    }

    fn delete_rule(&self, id: &str) -> Result<(), AlertStoreError> {
        self.rules.remove(id.as_bytes())?;
        self.sync()
    }

    fn rules(&self) -> Result<Vec<Rule>, AlertStoreError> {
        read_all(&self.rules, "rule")
    }
}
