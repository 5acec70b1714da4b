//! `citysense-agent reset-outbox`: the way out of a damaged outbox, kept apart
//! from the engine because it must work when opening the store does not. It
//! never deletes: the old store is moved aside for inspection, and the new one
//! starts after every seq the old one handed out, so no seq is ever reused and
//! the collector counts the gap as dropped readings.

use std::path::{Path, PathBuf};

use super::migrate::{FORMAT_CHUNKS, META_FORMAT};
use super::watermark::{Watermark, META_ACKED, META_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("cannot read the watermark in {path}: {err}")]
    Watermark { path: PathBuf, err: std::io::Error },
    #[error("cannot move {path} to {aside}: {err}")]
    MoveAside { path: PathBuf, aside: PathBuf, err: std::io::Error },
    #[error("cannot create {path}: {err}")]
    CreateDir { path: PathBuf, err: std::io::Error },
    #[error("cannot create a new outbox at {path}: {err}")]
    Create { path: PathBuf, err: sled::Error },
    #[error("cannot write the watermark of the new outbox at {path}: {err}")]
    WriteWatermark { path: PathBuf, err: std::io::Error },
}

/// Moves a damaged outbox aside and starts an empty one whose first seq
/// follows every seq the old one handed out. Returns where the old one went
/// and the seq the new one starts after.
pub fn reset(path: &Path) -> Result<(PathBuf, u64), ResetError> {
    let p = || path.to_path_buf();
    let mark = Watermark::read(path).map_err(|err| ResetError::Watermark { path: p(), err })?;
    let after = mark.map(|m| m.next_seq.saturating_sub(1)).unwrap_or(0);
    // The same sequence goes on (the collector counts the gap as dropped);
    // without a watermark there is none to go on, and the new store makes a new epoch.
    let epoch = mark.map(|m| m.epoch);
    let aside = PathBuf::from(format!("{}.damaged-{}", path.display(), shared::now_ms() / 1000));
    std::fs::rename(path, &aside).map_err(|err| ResetError::MoveAside { path: p(), aside: aside.clone(), err })?;
    std::fs::create_dir_all(path).map_err(|err| ResetError::CreateDir { path: p(), err })?;
    let create = |err| ResetError::Create { path: p(), err };
    let db = sled::Config::new().path(path).open().map_err(create)?;
    let tree = db.open_tree("outbox").map_err(create)?;
    tree.insert(META_ACKED, &after.to_be_bytes()).map_err(create)?;
    tree.insert(META_FORMAT, &FORMAT_CHUNKS.to_be_bytes()).map_err(create)?;
    if let Some(e) = epoch {
        tree.insert(META_EPOCH, &e.to_be_bytes()).map_err(create)?;
    }
    db.flush().map_err(create)?;
    Watermark { next_seq: after + 1, durable: after, acked: after, epoch: epoch.unwrap_or(0) }.write(path).map_err(|err| ResetError::WriteWatermark { path: p(), err })?;
    Ok((aside, after))
}
