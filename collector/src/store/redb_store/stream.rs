//! A series' packed hours laid end to end, in pieces that fill a page.
//!
//! redb keeps each value whole in one leaf and gives a leaf a power of two
//! of 4 KiB pages: an hour's block of 2.1 KB sat alone in 4 KiB, one of
//! 4.2 KB in 8 KiB, and about half of the store's file was padding. So each
//! series has a stream per kind (sample blocks, minute-rollup blocks): a
//! packed hour is appended to it, the stream is cut in pieces of exactly
//! what one leaf holds (`PIECE`, keys `K` / `Q`), and the hour's `C` / `R`
//! entry says where its bytes are. Only the stream's last piece is ever
//! rewritten; everything is in the caller's transaction, so a power cut
//! leaves the entries and the stream as one commit left them.
//!
//! A block under `SMALL` bytes (a series polled every few minutes) stays
//! in its entry: in a leaf it shares with others it costs less than a
//! pointer and its bytes in a piece.
//!
//! An hour packed again (a late sample) goes back to the end of the stream
//! when its bytes are the stream's last; otherwise its new block is kept in
//! its entry, as all blocks were before streams (and such entries are still
//! read), so what a stream holds that nothing points to is at most one
//! block per hour. Expiry deletes the pieces no entry points into.

use std::borrow::Cow;
use std::path::Path;

use redb::ReadableTable;

use super::super::{keys, StoreError};
use super::{engine, scan};

/// Bytes of one piece: a 4 KiB leaf less its header (4 bytes), the key's
/// and value's end offsets (4 each) and the 13-byte key.
pub(super) const PIECE: u64 = 4096 - 4 - 4 - 4 - 13;

/// Blocks shorter than this are kept in their entries. At 10 samples an hour
/// (100,000 series, `citysense-bench store --top-of-hour`) a stream took 57
/// bytes a reading in use against 44: a pointer (13 bytes) and a piece's
/// key cost more than a small entry's share of a leaf saves.
pub(super) const SMALL: usize = 256;

/// What a stream holds.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    /// Hours of samples (`block`), entries `C`.
    Samples,
    /// Hours of 1-minute rollups (`block::rollups`), entries `R`.
    Minutes,
}

impl Kind {
    pub(super) fn entry(self, id: u32, hour: i64) -> keys::Key {
        match self {
            Kind::Samples => keys::block(id, hour),
            Kind::Minutes => keys::minute_block(id, hour),
        }
    }

    fn piece(self, id: u32, n: u64) -> keys::Key {
        keys::piece(matches!(self, Kind::Minutes), id, n)
    }

    fn pieces(self, id: u32) -> (keys::Key, keys::Key) {
        (self.piece(id, 0), self.piece(id, i64::MAX as u64))
    }
}

/// First byte of an entry that points into the stream: no block format
/// starts with it (they start with their version, 1 or 2).
const AT: u8 = 0xFF;

/// Where an entry's bytes are.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    /// In the entry itself.
    Inline,
    /// `len` bytes from `offset` in the series' stream.
    At { offset: u64, len: u64 },
}

fn place(v: &[u8]) -> Option<Place> {
    match v.first() {
        Some(&AT) if v.len() == 13 => Some(Place::At { offset: u64::from_be_bytes(v[1..9].try_into().ok()?), len: u32::from_be_bytes(v[9..13].try_into().ok()?) as u64 }),
        Some(&AT) => None,
        _ => Some(Place::Inline),
    }
}

fn pointer(offset: u64, len: u64) -> [u8; 13] {
    let mut v = [AT; 13];
    v[1..9].copy_from_slice(&offset.to_be_bytes());
    v[9..].copy_from_slice(&(len as u32).to_be_bytes());
    v
}

fn corrupt(file: &Path, detail: String) -> StoreError {
    StoreError::Corrupt { path: file.display().to_string(), detail }
}

/// The block an entry `v` of series `id` holds or points to.
pub(super) fn bytes<'v, T: ReadableTable<&'static [u8], &'static [u8]>>(t: &T, file: &Path, kind: Kind, id: u32, v: &'v [u8]) -> Result<Cow<'v, [u8]>, StoreError> {
    let (offset, len) = match place(v) {
        Some(Place::Inline) => return Ok(Cow::Borrowed(v)),
        Some(Place::At { offset, len }) => (offset, len),
        None => return Err(corrupt(file, format!("a {kind:?} entry of series {id} is a damaged pointer"))),
    };
    let end = offset.checked_add(len).ok_or_else(|| corrupt(file, format!("a {kind:?} entry of series {id} points past any stream")))?;
    // A damaged length must not allocate gigabytes before it is found out.
    let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
    if len > 0 {
        let (first, last) = (offset / PIECE, (end - 1) / PIECE);
        let mut next = first;
        scan(t, file, &kind.piece(id, first), &kind.piece(id, last + 1), |k, piece| {
            let n = keys::parse_timed(k).map(|(_, n)| n as u64);
            if n != Some(next) {
                return Err(corrupt(file, format!("piece {next} of series {id}'s {kind:?} stream is missing")));
            }
            let at = next * PIECE;
            let from = offset.saturating_sub(at) as usize;
            let to = ((end - at).min(PIECE) as usize).min(piece.len());
            out.extend_from_slice(piece.get(from..to).unwrap_or_default());
            next += 1;
            Ok(true)
        })?;
    }
    if out.len() as u64 != len {
        return Err(corrupt(file, format!("series {id}'s {kind:?} stream holds {} of the {len} bytes at {offset}", out.len())));
    }
    Ok(Cow::Owned(out))
}

type Table<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Where the series' stream ends: the next append's offset.
fn end(t: &Table, file: &Path, kind: Kind, id: u32) -> Result<u64, StoreError> {
    let (lo, hi) = kind.pieces(id);
    match t.range::<&[u8]>(&lo[..]..=&hi[..]).map_err(engine(file))?.next_back() {
        Some(item) => {
            let (k, v) = item.map_err(engine(file))?;
            let n = keys::parse_timed(k.value()).map(|(_, n)| n as u64).ok_or_else(|| corrupt(file, "piece key is not 13 bytes".into()))?;
            Ok(n * PIECE + v.value().len() as u64)
        }
        None => Ok(0),
    }
}

/// Piece `n` of the series' stream (empty when it has none).
fn piece(t: &Table, file: &Path, kind: Kind, id: u32, n: u64) -> Result<Vec<u8>, StoreError> {
    Ok(t.get(&kind.piece(id, n)[..]).map_err(engine(file))?.map(|v| v.value().to_vec()).unwrap_or_default())
}

fn append(t: &mut Table, file: &Path, kind: Kind, id: u32, bytes: &[u8]) -> Result<u64, StoreError> {
    let start = end(t, file, kind, id)?;
    let (mut n, used) = (start / PIECE, (start % PIECE) as usize);
    let mut rest = bytes;
    if used > 0 {
        let mut last = piece(t, file, kind, id, n)?;
        let take = rest.len().min(PIECE as usize - used);
        last.extend_from_slice(&rest[..take]);
        t.insert(&kind.piece(id, n)[..], &last[..]).map_err(engine(file))?;
        rest = &rest[take..];
        n += 1;
    }
    for part in rest.chunks(PIECE as usize) {
        t.insert(&kind.piece(id, n)[..], part).map_err(engine(file))?;
        n += 1;
    }
    Ok(start)
}

/// Cuts the series' stream back to `to` bytes.
fn truncate(t: &mut Table, file: &Path, kind: Kind, id: u32, to: u64) -> Result<(), StoreError> {
    let (n, keep) = (to / PIECE, (to % PIECE) as usize);
    let (_, hi) = kind.pieces(id);
    let from = kind.piece(id, if keep > 0 { n + 1 } else { n });
    t.retain_in::<&[u8], _>(&from[..]..=&hi[..], |_, _| false).map_err(engine(file))?;
    if keep > 0 {
        let last = piece(t, file, kind, id, n)?;
        t.insert(&kind.piece(id, n)[..], &last[..keep.min(last.len())]).map_err(engine(file))?;
    }
    Ok(())
}

/// Where the hour's entry points; None when it has none or holds its block.
fn pointed(t: &Table, file: &Path, kind: Kind, id: u32, hour: i64) -> Result<Option<Place>, StoreError> {
    let v = t.get(&kind.entry(id, hour)[..]).map_err(engine(file))?;
    Ok(v.and_then(|v| place(v.value())))
}

/// Cuts the stream back when the hour's bytes are its last; whether it did.
fn cut_if_last(t: &mut Table, file: &Path, kind: Kind, id: u32, hour: i64) -> Result<Option<bool>, StoreError> {
    match pointed(t, file, kind, id, hour)? {
        Some(Place::At { offset, len }) if offset.checked_add(len) == Some(end(t, file, kind, id)?) => {
            truncate(t, file, kind, id, offset)?;
            Ok(Some(true))
        }
        Some(_) => Ok(Some(false)),
        None => Ok(None),
    }
}

/// Stores series `id`'s packed `hour`, replacing what the hour had.
pub(super) fn put(t: &mut Table, file: &Path, kind: Kind, id: u32, hour: i64, block: &[u8]) -> Result<(), StoreError> {
    let key = kind.entry(id, hour);
    // New, or the stream's last: appended. Elsewhere in the stream or held
    // in its entry: kept in the entry, so an hour packed again and again
    // leaves at most its first block behind in the stream.
    let append_it = !matches!(cut_if_last(t, file, kind, id, hour)?, Some(false));
    if append_it && block.len() >= SMALL && u32::try_from(block.len()).is_ok() {
        let offset = append(t, file, kind, id, block)?;
        t.insert(&key[..], &pointer(offset, block.len() as u64)[..]).map_err(engine(file))?;
    } else {
        t.insert(&key[..], block).map_err(engine(file))?;
    }
    Ok(())
}

/// Deletes series `id`'s packed `hour`.
pub(super) fn remove(t: &mut Table, file: &Path, kind: Kind, id: u32, hour: i64) -> Result<(), StoreError> {
    cut_if_last(t, file, kind, id, hour)?;
    t.remove(&kind.entry(id, hour)[..]).map_err(engine(file))?;
    Ok(())
}

/// Deletes the pieces of series `id`'s stream before the first byte an
/// entry points to (all of them when none does): after expiry.
pub(super) fn drop_unreferenced(t: &mut Table, file: &Path, kind: Kind, id: u32) -> Result<(), StoreError> {
    let mut first = None::<u64>;
    scan(&*t, file, &kind.entry(id, i64::MIN), &kind.entry(id, i64::MAX), |_, v| {
        if let Some(Place::At { offset, .. }) = place(v) {
            first = Some(first.map_or(offset, |f| f.min(offset)));
        }
        Ok(true)
    })?;
    let (lo, hi) = kind.pieces(id);
    match first {
        Some(offset) => {
            let upto = kind.piece(id, offset / PIECE);
            t.retain_in::<&[u8], _>(&lo[..]..&upto[..], |_, _| false).map_err(engine(file))?;
        }
        None => t.retain_in::<&[u8], _>(&lo[..]..=&hi[..], |_, _| false).map_err(engine(file))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_pointer_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.redb");
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(super::super::TABLE).unwrap();
            put(&mut t, &file, Kind::Samples, 1, 0, &[2; 300]).unwrap();
            for v in [pointer(u64::MAX - 3, 100), pointer(0, u32::MAX as u64), pointer(5_000, 300), pointer(0, 301)] {
                assert!(matches!(bytes(&t, &file, Kind::Samples, 1, &v), Err(StoreError::Corrupt { .. })), "{v:?}");
            }
            assert_eq!(bytes(&t, &file, Kind::Samples, 1, &pointer(0, 300)).unwrap().len(), 300);
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_pointer_is_told_from_every_block_format() {
        assert_eq!(place(&pointer(7 * PIECE + 3, 2100)), Some(Place::At { offset: 7 * PIECE + 3, len: 2100 }));
        for version in [1u8, 2] {
            assert_eq!(place(&[version, 4, 0]), Some(Place::Inline));
        }
        assert_eq!(place(&[AT, 1, 2]), None, "a cut pointer is damage, not a block");
    }
}
