//! The store's key and value layout, independent of the engine under it.
//! All keys sort bytewise so a series' samples are one contiguous range:
//!
//! - `S` sensor `\0` metric → series id (u32, big-endian)
//! - `P` series id, ts (i64 with the sign bit flipped, big-endian) → value (f64) + quality (u8):
//!   a sample as stores before chunks wrote it (still read, packed like any)
//! - `X` minute start (as in `P`), series id, chunk number (u64,
//!   big-endian) → the samples one settle of the open samples brought for
//!   that series and minute (`encode_chunk`). Time first: a settle adds to
//!   the newest minutes only, so it appends at the end of the keys rather
//!   than into every series' own range (which made each settle rewrite
//!   every page of the hour's chunks). A series' chunks are found through
//!   its `U` hours, a minute at a time.
//! - `W` series id, minute or hour start, chunk number → chunks as stores
//!   before `X` wrote them: moved to `X` when the store opens
//! - `N` → the next chunk number (u64, big-endian)
//! - `O` entry id (u64, big-endian) → the samples of one write not yet in
//!   chunks, 21 bytes each (`encode_logged`): the open samples' log, replayed
//!   into chunks at open
//! - `C` series id, hour start (as in `P`) → that hour's samples packed
//!   (`block`), or where in the series' `K` stream they are
//! - `U` series id, hour start → nothing: an hour with chunks (or `P` samples) not yet packed
//! - `M` / `H` series id, bucket start (as in `P`) → 1-minute / 1-hour `Rollup`
//! - `R` series id, hour start → that hour's 1-minute rollups packed
//!   (`block::rollups`), or where in the series' `Q` stream they are
//! - `D` series id, minute start → nothing: a minute written since its rollups were made
//! - `K` / `Q` series id, piece number (as in `P`) → a piece of the series'
//!   stream of packed sample / minute-rollup hours (`redb_store::stream`),
//!   which `C` / `R` entries point into
//! - `G` gateway (`\0` epoch, for epochs other than 0) → postcard `Progress`
//! - `L` entry id (u64, big-endian) → postcard (gateway, readings): the forward log
//! - `B` sensor → gateway (UTF-8): which gateway an uncatalogued sensor is bound to

use shared::{GatewayId, Metric, Quality, Reading, SensorId};

use super::{Forward, Level, Rollup, Sample, SeqSpace, StoreError};

pub type Key = [u8; 13];

pub fn series(sensor: &str, metric: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + sensor.len() + metric.len());
    k.push(b'S');
    k.extend_from_slice(sensor.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

/// (sensor, metric) of an `S` key.
pub fn parse_series(k: &[u8]) -> Option<(SensorId, Metric)> {
    let body = k.get(1..)?;
    let sep = body.iter().position(|&b| b == 0)?;
    Some((String::from_utf8_lossy(&body[..sep]).into_owned().into(), String::from_utf8_lossy(&body[sep + 1..]).into_owned().into()))
}

pub fn level(level: Level, id: u32, ts_ms: i64) -> Key {
    let prefix = match level {
        Level::Raw => b'P',
        Level::Minute => b'M',
        Level::Hour => b'H',
    };
    timed(prefix, id, ts_ms)
}

pub fn point(id: u32, ts_ms: i64) -> Key {
    level(Level::Raw, id, ts_ms)
}

pub fn block(id: u32, hour: i64) -> Key {
    timed(b'C', id, hour)
}

/// `X` key: chunk `n` of series `id` in the minute starting at `minute`.
pub fn chunk(minute: i64, id: u32, n: u64) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = b'X';
    k[1..9].copy_from_slice(&((minute as u64) ^ (1 << 63)).to_be_bytes());
    k[9..13].copy_from_slice(&id.to_be_bytes());
    k[13..].copy_from_slice(&n.to_be_bytes());
    k
}

/// A `W` key, for tests that write a store as it was before `X`.
#[cfg(test)]
pub fn legacy_chunk(id: u32, start: i64, n: u64) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[..13].copy_from_slice(&timed(b'W', id, start));
    k[13..].copy_from_slice(&n.to_be_bytes());
    k
}

/// (series id, start) of a `W` key: a chunk as stores before `X` keyed it
/// (by its minute, or by its hour before minute chunks).
pub fn parse_legacy_chunk(k: &[u8]) -> Option<(u32, i64)> {
    if k.len() != 21 || k[0] != b'W' {
        return None;
    }
    parse_timed(&k[..13])
}

pub const NEXT_CHUNK: &[u8] = b"N";

/// `O` key: entry `n` of the open samples' log.
pub fn logged(n: u64) -> [u8; 9] {
    let mut k = [b'O'; 9];
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Samples of one write as the open samples' log keeps them, 21 bytes each:
/// series id (u32), time (i64), value (f64), quality (u8), all big-endian.
pub fn encode_logged(samples: &[(u32, Sample)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(samples.len() * 21);
    for (id, s) in samples {
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&s.ts_ms.to_be_bytes());
        v.extend_from_slice(&s.value.to_be_bytes());
        v.push(s.quality.as_u8());
    }
    v
}

pub fn decode_logged(v: &[u8]) -> Option<Vec<(u32, Sample)>> {
    if !v.len().is_multiple_of(21) {
        return None;
    }
    let be8 = |b: &[u8]| <[u8; 8]>::try_from(b).unwrap();
    Some(
        v.chunks_exact(21)
            .map(|c| {
                let id = u32::from_be_bytes(c[..4].try_into().unwrap());
                (id, Sample { ts_ms: i64::from_be_bytes(be8(&c[4..12])), value: f64::from_be_bytes(be8(&c[12..20])), quality: Quality::from_u8(c[20]) })
            })
            .collect(),
    )
}

/// `K` (samples) or `Q` (minute rollups) key of piece `n` of series `id`'s stream.
pub fn piece(minutes: bool, id: u32, n: u64) -> Key {
    timed(if minutes { b'Q' } else { b'K' }, id, n as i64)
}

pub fn minute_block(id: u32, hour: i64) -> Key {
    timed(b'R', id, hour)
}

pub fn unpacked(id: u32, hour: i64) -> Key {
    timed(b'U', id, hour)
}

pub fn dirty(id: u32, minute: i64) -> Key {
    timed(b'D', id, minute)
}

fn timed(prefix: u8, id: u32, ts_ms: i64) -> Key {
    let mut k = [0u8; 13];
    k[0] = prefix;
    k[1..5].copy_from_slice(&id.to_be_bytes());
    k[5..].copy_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// (series id, time) of a 13-byte key.
pub fn parse_timed(k: &[u8]) -> Option<(u32, i64)> {
    if k.len() != 13 {
        return None;
    }
    Some((u32::from_be_bytes(k[1..5].try_into().ok()?), (u64::from_be_bytes(k[5..13].try_into().ok()?) ^ (1 << 63)) as i64))
}

/// `G` gateway for epoch 0 (the key progress had before epochs), `G`
/// gateway NUL epoch for the others: gateway ids hold no NUL.
pub fn progress(space: &SeqSpace) -> Vec<u8> {
    let mut k = vec![b'G'];
    k.extend_from_slice(space.gateway.as_bytes());
    if space.epoch != 0 {
        k.push(0);
        k.extend_from_slice(&space.epoch.to_be_bytes());
    }
    k
}

pub fn parse_progress(k: &[u8]) -> Option<SeqSpace> {
    let body = k.get(1..)?;
    match body.iter().position(|&b| b == 0) {
        None => Some(SeqSpace::new(String::from_utf8_lossy(body).into_owned(), 0)),
        Some(sep) => Some(SeqSpace::new(String::from_utf8_lossy(&body[..sep]).into_owned(), u64::from_be_bytes(body[sep + 1..].try_into().ok()?))),
    }
}

/// `B` sensor: the binding of an uncatalogued sensor to its gateway.
pub fn binding(sensor: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + sensor.len());
    k.push(b'B');
    k.extend_from_slice(sensor.as_bytes());
    k
}

/// (sensor, gateway) of a `B` entry.
pub fn parse_binding(k: &[u8], v: &[u8]) -> Option<(SensorId, GatewayId)> {
    let sensor = std::str::from_utf8(k.get(1..)?).ok()?;
    let gateway = std::str::from_utf8(v).ok()?;
    (!sensor.is_empty() && !gateway.is_empty()).then(|| (sensor.into(), gateway.into()))
}

pub fn forward(id: u64) -> [u8; 9] {
    let mut k = [b'L'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The smallest key above every key starting with `prefix`.
pub fn after(prefix: u8) -> [u8; 1] {
    [prefix + 1]
}

/// A `P` sample as stores before chunks wrote it (tests make such stores).
#[cfg(test)]
pub fn encode_sample(r: &Reading) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(&r.value.to_be_bytes());
    v[8] = r.quality.as_u8();
    v
}

pub fn sample(key: &[u8], v: &[u8]) -> Option<Sample> {
    let (_, ts_ms) = parse_timed(key)?;
    if v.len() != 9 {
        return None;
    }
    Some(Sample { ts_ms, value: f64::from_be_bytes(v[..8].try_into().ok()?), quality: Quality::from_u8(v[8]) })
}

/// A chunk's samples, in time order, 13 bytes each: ms since the key's start
/// (u32), value (f64), quality (u8). Plain on purpose: a chunk lives until
/// its hour is packed, and ingest writes one per series and minute a write
/// touches.
pub fn encode_chunk(start: i64, samples: &[Sample]) -> Vec<u8> {
    let mut v = Vec::with_capacity(samples.len() * 13);
    for s in samples {
        v.extend_from_slice(&((s.ts_ms - start) as u32).to_be_bytes());
        v.extend_from_slice(&s.value.to_be_bytes());
        v.push(s.quality.as_u8());
    }
    v
}

pub fn decode_chunk(start: i64, v: &[u8]) -> Option<Vec<Sample>> {
    if !v.len().is_multiple_of(13) {
        return None;
    }
    v.chunks_exact(13)
        .map(|c| {
            let offset = u32::from_be_bytes(c[..4].try_into().unwrap()) as i64;
            (offset < 3_600_000).then(|| Sample { ts_ms: start + offset, value: f64::from_be_bytes(c[4..12].try_into().unwrap()), quality: Quality::from_u8(c[12]) })
        })
        .collect()
}

pub fn encode_rollup(r: &Rollup) -> [u8; 44] {
    let mut v = [0u8; 44];
    v[0..8].copy_from_slice(&r.min.to_be_bytes());
    v[8..16].copy_from_slice(&r.max.to_be_bytes());
    v[16..24].copy_from_slice(&r.sum.to_be_bytes());
    v[24..28].copy_from_slice(&r.count.to_be_bytes());
    v[28..36].copy_from_slice(&r.last_ts.to_be_bytes());
    v[36..44].copy_from_slice(&r.last.to_be_bytes());
    v
}

pub fn rollup(key: &[u8], v: &[u8]) -> Option<Rollup> {
    let (_, start_ms) = parse_timed(key)?;
    if v.len() != 44 {
        return None;
    }
    let f = |i: usize| f64::from_be_bytes(v[i..i + 8].try_into().unwrap());
    Some(Rollup {
        start_ms,
        min: f(0),
        max: f(8),
        sum: f(16),
        count: u32::from_be_bytes(v[24..28].try_into().unwrap()),
        last_ts: i64::from_be_bytes(v[28..36].try_into().unwrap()),
        last: f(36),
    })
}

/// How many readings a forward-log entry holds, read from its header (the
/// gateway, then the readings' count) without decoding them: trimming the
/// log counts what it deletes, and decoding every reading again for that
/// cost as much as the sink's read. `None` for an entry that does not decode.
pub fn forward_count(v: &[u8]) -> Option<u64> {
    let (_, rest) = postcard::take_from_bytes::<&str>(v).ok()?;
    // postcard's sequence length: a LEB128 varint.
    let mut n = 0u64;
    for (i, b) in rest.iter().take(10).enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

pub fn decode_forward(path: &str, k: &[u8], v: &[u8]) -> Result<Forward, StoreError> {
    let id = k.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let body: Option<(String, Vec<Reading>)> = postcard::from_bytes(v).ok();
    match (id, body) {
        (Some(id), Some((gateway, readings))) => Ok(Forward { id, gateway, readings }),
        _ => Err(StoreError::Corrupt { path: path.to_string(), detail: format!("forward-log entry {k:?} does not decode") }),
    }
}

#[cfg(test)]
mod tests {
    use shared::{Quality, Reading};

    #[test]
    fn a_forward_entrys_count_is_read_from_its_header_as_decoding_gives_it() {
        for n in [0usize, 1, 127, 128, 300, 16_384] {
            let readings: Vec<Reading> = (0..n)
                .map(|i| Reading { seq: shared::Seq(i as u64), sensor: format!("s{i}").into(), metric: "m".into(), ts_ms: i as i64, value: 1.5, quality: Quality::Good })
                .collect();
            let v = postcard::to_allocvec(&("gw-ü", readings.as_slice())).unwrap();
            assert_eq!(super::forward_count(&v), Some(n as u64), "{n} readings");
            assert_eq!(super::decode_forward("p", &super::forward(7), &v).unwrap().readings.len(), n);
        }
        assert_eq!(super::forward_count(&[0xff]), None, "a gateway's length past the end");
        assert_eq!(super::forward_count(&[2, b'g', b'w']), None, "no count");
    }
}
