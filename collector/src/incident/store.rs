//! Where incidents and silences are kept: trees in the alert store's sled
//! database, each change flushed and the log fsynced before it is announced,
//! as `rules::store` keeps alerts. Deadlines and timer state live on the
//! incident, so the timers survive a restart.

use crate::rules::store::AlertDb;

use super::silence::Silence;
use super::Incident;

#[derive(Debug, thiserror::Error)]
pub enum IncidentStoreError {
    #[error("incident store: {0}")]
    Engine(#[from] sled::Error),
    #[error("incident store: stored {what} unreadable: {source}")]
    Corrupt { what: &'static str, source: serde_json::Error },
}

pub trait IncidentStore: Send + Sync {
    fn save_incident(&self, i: &Incident) -> Result<(), IncidentStoreError>;
    fn incidents(&self) -> Result<Vec<Incident>, IncidentStoreError>;
    fn save_silence(&self, s: &Silence) -> Result<(), IncidentStoreError>;
    fn silences(&self) -> Result<Vec<Silence>, IncidentStoreError>;
    /// The highest alert id taken in (grouped, merged or held by a silence).
    fn last_alert(&self) -> Result<u64, IncidentStoreError>;
    fn set_last_alert(&self, id: u64) -> Result<(), IncidentStoreError>;
}

pub struct SledIncidentStore {
    /// The alert store's database, synced like the alerts (`AlertDb::sync`).
    db: AlertDb,
    incidents: sled::Tree,
    silences: sled::Tree,
    meta: sled::Tree,
}

impl SledIncidentStore {
    /// In the alert store's database.
    pub fn open(db: &AlertDb) -> Result<SledIncidentStore, IncidentStoreError> {
        Ok(SledIncidentStore { db: db.clone(), incidents: db.open_tree("incidents")?, silences: db.open_tree("silences")?, meta: db.open_tree("incident_meta")? })
    }

    fn sync(&self) -> Result<(), IncidentStoreError> {
        Ok(self.db.sync()?)
    }
}

fn read_all<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &'static str) -> Result<Vec<T>, IncidentStoreError> {
    tree.iter()
        .map(|item| {
            let (_, v) = item?;
            serde_json::from_slice(&v).map_err(|source| IncidentStoreError::Corrupt { what, source })
        })
        .collect()
}

impl IncidentStore for SledIncidentStore {
    fn save_incident(&self, i: &Incident) -> Result<(), IncidentStoreError> {
        self.incidents.insert(i.id.to_be_bytes(), serde_json::to_vec(i).expect("incident serializes"))?;
        self.sync()
    }

    fn incidents(&self) -> Result<Vec<Incident>, IncidentStoreError> {
        read_all(&self.incidents, "incident")
    }

    fn save_silence(&self, s: &Silence) -> Result<(), IncidentStoreError> {
        self.silences.insert(s.id.to_be_bytes(), serde_json::to_vec(s).expect("silence serializes"))?;
        self.sync()
    }

    fn silences(&self) -> Result<Vec<Silence>, IncidentStoreError> {
        read_all(&self.silences, "silence")
    }

    fn last_alert(&self) -> Result<u64, IncidentStoreError> {
        Ok(self.meta.get("last_alert")?.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
    }

    fn set_last_alert(&self, id: u64) -> Result<(), IncidentStoreError> {
        self.meta.insert("last_alert", &id.to_be_bytes())?;
        self.sync()
    }
}
