//! How far into the batch log this collector's store is: the stream
//! sequence of the last batch whose fate is final here (stored and synced,
//! or refused for good), with every batch before it settled too. Kept in a
//! file beside the store, written only after the store's sync, so it is
//! never ahead of the store; when it is behind (a crash between the two),
//! the batches in between are read again and ingest deduplicates them. An
//! empty data directory has none: the collector reads the whole log.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

pub struct Applied {
    path: PathBuf,
    upto: u64,
}

impl Applied {
    pub fn open(path: &Path) -> io::Result<Applied> {
        let upto = match std::fs::read_to_string(path) {
            Ok(text) => {
                text.trim().parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: `{}` is not a stream sequence: {e}", path.display(), text.trim())))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Applied { path: path.to_path_buf(), upto })
    }

    /// The last settled stream sequence; 0 when none.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// Back to the log's start.
    pub fn reset(&mut self) -> io::Result<()> {
        self.set(0)
    }

    /// Moves past `seq`, logging rather than failing: behind is safe, those
    /// batches are read again and deduplicated.
    pub fn settled(&mut self, seq: u64) {
        if seq > 0 {
            if let Err(e) = self.set(seq) {
                tracing::warn!("batch log: cannot record progress at {}: {e}", self.path.display());
            }
        }
    }

    fn set(&mut self, seq: u64) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{seq}\n"))?;
        std::fs::rename(&tmp, &self.path)?;
        self.upto = seq;
        Ok(())
    }
}

/// Batches handed to ingest, in log order, each waiting for its fate, with
/// what is needed to let the log know (`T`).
pub struct Pending<T> {
    queue: VecDeque<(u64, oneshot::Receiver<()>, T)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending { queue: VecDeque::new() }
    }
}

/// A batch ingest could not store: the log must be read again from it.
#[derive(Debug)]
pub struct NotStored(pub u64);

impl<T> Pending<T> {
    pub fn push(&mut self, seq: u64, told: oneshot::Receiver<()>, with: T) {
        self.queue.push_back((seq, told, with));
    }

    /// Everything still waiting, given up on.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..).map(|(_, _, t)| t)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Waits for the oldest batch's fate, and returns what came with it and
    /// with every settled one after it, and the last one's stream sequence.
    pub async fn settle(&mut self) -> Result<(Vec<T>, u64), NotStored> {
        let mut done = Vec::new();
        let mut last = None;
        if let Some((seq, told, _)) = self.queue.front_mut() {
            let seq = *seq;
            if told.await.is_err() {
                return Err(NotStored(seq));
            }
            done.extend(self.queue.pop_front().map(|(_, _, t)| t));
            last = Some(seq);
        }
        while let Some((seq, told, _)) = self.queue.front_mut() {
            match told.try_recv() {
                Ok(()) => {
                    last = Some(*seq);
                    done.extend(self.queue.pop_front().map(|(_, _, t)| t));
                }
                Err(oneshot::error::TryRecvError::Empty) => break,
                Err(oneshot::error::TryRecvError::Closed) => return Err(NotStored(*seq)),
            }
        }
        Ok((done, last.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_moves_only_over_settled_batches_in_order_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("applied");
        let mut applied = Applied::open(&path).unwrap();
        assert_eq!(applied.upto(), 0);
        let mut pending = Pending::default();
        let (a, ra) = oneshot::channel();
        let (b, rb) = oneshot::channel();
        let (c, rc) = oneshot::channel::<()>();
        pending.push(7, ra, 'a');
        pending.push(8, rb, 'b');
        pending.push(9, rc, 'c');
        // 8 settles before 7: nothing moves until 7 does, then both.
        b.send(()).unwrap();
        a.send(()).unwrap();
        let (done, last) = pending.settle().await.unwrap();
        assert_eq!((done, last), (vec!['a', 'b'], 8));
        applied.settled(last);
        assert_eq!(applied.upto(), 8);
        drop(c);
        assert!(matches!(pending.settle().await, Err(NotStored(9))));
        assert_eq!(Applied::open(&path).unwrap().upto(), 8);
    }

    #[test]
    fn a_damaged_progress_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("applied");
        std::fs::write(&path, "seven").unwrap();
        let e = Applied::open(&path).err().unwrap().to_string();
        assert!(e.contains("applied") && e.contains("seven"), "{e}");
    }
}
