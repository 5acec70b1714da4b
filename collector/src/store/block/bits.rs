//! Byte and bit level pieces the block sections share: varints, zigzag,
//! a bit writer and reader (least significant bit first), and packed
//! integer runs (frame of reference: per run of 64, the smallest value and
//! the bit width of the rest above it).

/// Values per packed run: small enough that one outlier (a gap, a spike)
/// widens only its own run, large enough that the run header (min and
/// width, 2-3 bytes) costs under half a bit per value.
const RUN: usize = 64;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub struct Reader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7F) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(b)
    }

    pub fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

#[derive(Default)]
pub struct BitWriter {
    out: Vec<u8>,
    acc: u128,
    n: u32,
}

impl BitWriter {
    /// The low `bits` bits of `v` (bits <= 64).
    pub fn write(&mut self, v: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        let v = if bits == 64 { v } else { v & ((1u64 << bits) - 1) };
        self.acc |= (v as u128) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// The bytes written, the last one padded with zero bits.
    pub fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader { bytes, pos: 0 }
    }

    pub fn read(&mut self, bits: u32) -> Option<u64> {
        let (mut v, mut got) = (0u64, 0u32);
        while got < bits {
            let byte = *self.bytes.get(self.pos / 8)?;
            let off = (self.pos % 8) as u32;
            let take = (8 - off).min(bits - got);
            v |= (((byte >> off) as u64) & ((1u64 << take) - 1)) << got;
            got += take;
            self.pos += take as usize;
        }
        Some(v)
    }

    /// Bytes consumed, the partly read last one included.
    pub fn bytes_used(&self) -> usize {
        self.pos.div_ceil(8)
    }
}

/// Integers in runs of `RUN`: zigzag varint of the run's minimum, a width
/// byte, then each value minus the minimum in `width` bits. Arithmetic wraps,
/// so any i64 sequence comes back as given.
pub fn put_packed(out: &mut Vec<u8>, values: &[i64]) {
    for run in values.chunks(RUN) {
        let min = run.iter().copied().min().unwrap_or(0);
        let width = run.iter().map(|&v| 64 - (v.wrapping_sub(min) as u64).leading_zeros()).max().unwrap_or(0);
        put_varint(out, zigzag(min));
        out.push(width as u8);
        let mut w = BitWriter::default();
        for &v in run {
            w.write(v.wrapping_sub(min) as u64, width);
        }
        out.extend(w.finish());
    }
}

pub fn packed(r: &mut Reader, n: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = (n - out.len()).min(RUN);
        let min = unzigzag(r.varint()?);
        let width = r.byte()? as u32;
        if width > 64 {
            return None;
        }
        let mut bits = BitReader::new(r.take((len * width as usize).div_ceil(8))?);
        for _ in 0..len {
            out.push(min.wrapping_add(bits.read(width)? as i64));
        }
    }
    Some(out)
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

/// The bits of `a` above the low `width`.
fn high(a: u64, width: u32) -> u64 {
    a.checked_shr(width).unwrap_or(0)
}

/// As `put_packed`, with outliers written apart ("patched" runs): each run
/// takes the width that packs it smallest, a value above it is an outlier,
/// and after every value's low `width` bits come the outliers' indexes and
/// the bits above. One late poll in a run of 64 costs its own 2-3 bytes,
/// not 4 more bits on every value of the run. Per run: zigzag varint of the
/// minimum, a width byte, a varint count of outliers, the bits, then a byte
/// index and a varint of the high bits per outlier.
pub fn put_patched(out: &mut Vec<u8>, values: &[i64]) {
    for run in values.chunks(RUN) {
        let min = run.iter().copied().min().unwrap_or(0);
        let above: Vec<u64> = run.iter().map(|&v| v.wrapping_sub(min) as u64).collect();
        let full = above.iter().map(|&a| 64 - a.leading_zeros()).max().unwrap_or(0);
        let bits = |w: u32| w as usize * run.len() + above.iter().filter(|&&a| high(a, w) != 0).map(|&a| 8 + 8 * varint_len(high(a, w))).sum::<usize>();
        // The narrowest of the cheapest: no outlier when it costs nothing.
        let width = (0..=full).rev().min_by_key(|&w| bits(w)).unwrap_or(0);
        put_varint(out, zigzag(min));
        out.push(width as u8);
        let outliers: Vec<(usize, u64)> = above.iter().enumerate().filter(|(_, &a)| high(a, width) != 0).map(|(i, &a)| (i, high(a, width))).collect();
        put_varint(out, outliers.len() as u64);
        let mut w = BitWriter::default();
        for &a in &above {
            w.write(a, width);
        }
        out.extend(w.finish());
        for (i, hi) in outliers {
            out.push(i as u8);
            put_varint(out, hi);
        }
    }
}

pub fn patched(r: &mut Reader, n: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = (n - out.len()).min(RUN);
        let min = unzigzag(r.varint()?);
        let width = r.byte()? as u32;
        let count = r.varint()?;
        if width > 64 || count > len as u64 || (width == 64 && count > 0) {
            return None;
        }
        let mut bits = BitReader::new(r.take((len * width as usize).div_ceil(8))?);
        let mut above = (0..len).map(|_| bits.read(width)).collect::<Option<Vec<u64>>>()?;
        for _ in 0..count {
            let i = r.byte()? as usize;
            let hi = r.varint()?;
            *above.get_mut(i)? |= hi << width;
        }
        out.extend(above.into_iter().map(|a| min.wrapping_add(a as i64)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_runs_keep_outliers_apart() {
        // Latencies of 0-8 ms, one poll in 64 late by 150 ms: 4 bits each and
        // the late one apart, not 8 bits each.
        let late: Vec<i64> = (0..640).map(|i| if i % 64 == 17 { 150 } else { (i * 7) % 9 }).collect();
        let (mut narrow, mut wide) = (Vec::new(), Vec::new());
        put_patched(&mut narrow, &late);
        put_packed(&mut wide, &late);
        assert!(narrow.len() < 400, "{} bytes patched, {} not", narrow.len(), wide.len());
        assert!(wide.len() >= 640, "{} bytes not patched", wide.len());
        assert_eq!(patched(&mut Reader::new(&narrow), late.len()).unwrap(), late);
    }

    #[test]
    fn packed_and_patched_runs_give_back_any_integers_including_the_extremes() {
        let values: Vec<i64> = (0..200)
            .map(|i| match i % 5 {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => -i,
                3 => 0,
                _ => i * 1_000_003,
            })
            .collect();
        type Runs = (fn(&mut Vec<u8>, &[i64]), fn(&mut Reader, usize) -> Option<Vec<i64>>);
        let runs: [Runs; 2] = [(put_packed, packed), (put_patched, patched)];
        for (put, get) in runs {
            let mut out = Vec::new();
            put(&mut out, &values);
            let mut r = Reader::new(&out);
            assert_eq!(get(&mut r, values.len()).unwrap(), values);
            assert!(r.done());
        }
    }

    #[test]
    fn a_constant_run_costs_its_header_only() {
        let mut out = Vec::new();
        put_packed(&mut out, &[1000; 64]);
        assert_eq!(out.len(), 3, "varint of zigzag(1000) is 2 bytes, width 1 byte, no value bits");
    }
}
