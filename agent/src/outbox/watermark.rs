//! Seq bookkeeping that must survive a crash: which seqs were handed out, made
//! durable and acknowledged. It lives in two places on purpose. Meta keys in
//! the sled tree travel in the same atomic batch as the chunks they describe;
//! the watermark file beside sled's own (`NEXT_SEQ DURABLE_SEQ ACKED_SEQ`,
//! rewritten in place after every flush) is how a damaged sled store is told
//! apart from an empty one: sled recovers a corrupt log by truncating it, and
//! without this record would silently hand out seqs again from 1.

use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::OutboxError;

/// Meta keys start with 0xFF; chunk keys are big-endian seqs below 2^56, so
/// the two never mix and chunks sort first.
pub(super) const META_START: &[u8] = &[0xFF];
/// Every seq at or below it is acknowledged (the acked floor).
pub(super) const META_ACKED: &[u8] = &[0xFF, b'a'];
/// Readings discarded by `drop_oldest`, ever.
pub(super) const META_DROPPED: &[u8] = &[0xFF, b'd'];
/// The seq after the last one made durable, so that a store whose readings
/// were all dropped still knows which seqs it handed out.
pub(super) const META_NEXT: &[u8] = &[0xFF, b'n'];
/// The outbox's epoch: its sequence space, random, made with the store (0
/// for stores made before epochs). A store made anew gets a new one, so its
/// seqs, starting again at 1, are not taken for replays by the collector.
pub(super) const META_EPOCH: &[u8] = &[0xFF, b'e'];

/// A meta value; 0 when absent.
pub(super) fn read_u64(tree: &sled::Tree, k: &[u8]) -> sled::Result<u64> {
    Ok(tree.get(k)?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))).unwrap_or(0))
}

const WATERMARK: &str = "watermark";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermark {
    pub next_seq: u64,
    pub durable: u64,
    pub acked: u64,
    /// Kept here too so that `reset-outbox` continues the same sequence.
    pub epoch: u64,
}

impl Watermark {
    pub fn read(dir: &Path) -> std::io::Result<Option<Watermark>> {
        let text = match std::fs::read_to_string(dir.join(WATERMARK)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let n: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        match n[..] {
            [next_seq, durable, acked] => Ok(Some(Watermark { next_seq, durable, acked, epoch: 0 })),
            [next_seq, durable, acked, epoch] => Ok(Some(Watermark { next_seq, durable, acked, epoch })),
            _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not `NEXT DURABLE ACKED [EPOCH]`", dir.join(WATERMARK).display()))),
        }
    }

    /// Writes the file anew, atomically (a temporary file renamed over it).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{WATERMARK}.tmp"));
        let f = std::fs::File::create(&tmp)?;
        f.write_all_at(self.line().as_bytes(), 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(WATERMARK))?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// One line of fixed width: rewritten in place, a new value always covers
    /// the whole of the old one.
    fn line(&self) -> String {
        format!("{:<20} {:<20} {:<20} {:<20}\n", self.next_seq, self.durable, self.acked, self.epoch)
    }
}

/// The watermark file held open and rewritten in place after every flush:
/// one write within a sector and an `fdatasync`, where making a new file and
/// renaming it over the old one cost a journal commit (4-8 ms here) on every
/// flush, on the path of every reading to the collector. A write of a few
/// dozen bytes at offset 0 is not torn by a crash (a sector is written
/// whole); should it be lost, the old value stays, which only says less was
/// durable than was.
pub(super) struct MarkFile {
    file: std::fs::File,
}

impl MarkFile {
    /// Opens the watermark in `dir`, writing `first` (atomically) when there is none yet.
    pub fn open(dir: &Path, first: Watermark) -> std::io::Result<MarkFile> {
        if !dir.join(WATERMARK).exists() {
            first.write(dir)?;
        }
        Ok(MarkFile { file: std::fs::OpenOptions::new().write(true).open(dir.join(WATERMARK))? })
    }

    pub fn write(&self, mark: &Watermark) -> std::io::Result<()> {
        self.file.write_all_at(mark.line().as_bytes(), 0)?;
        self.file.sync_data()
    }
}

/// What sled holds after opening, against the watermark in `dir`: a store that
/// lost readings it had made durable (or acks it had recorded) is damaged.
/// `last` is the highest stored seq, `depth` the readings that survive.
pub(super) fn check(dir: &Path, next_seq: u64, acked: u64, last: u64, depth: u64) -> Result<(), OutboxError> {
    let damaged = |detail: String| OutboxError::Damaged { path: dir.to_path_buf(), detail };
    match Watermark::read(dir) {
        Ok(Some(w)) if w.durable >= next_seq || w.acked > acked.max(last) => {
            Err(damaged(format!("it held readings up to seq {} (acknowledged up to {}), but only {} survive up to seq {}", w.durable, w.acked, depth, next_seq - 1)))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(damaged(format!("unreadable watermark: {e}"))),
    }
}
