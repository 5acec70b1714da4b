//! XOR float compression after Facebook's Gorilla (Pelkonen et al., VLDB
//! 2015): each value's bits XOR the previous value's; an equal value costs
//! one bit, a close one only its meaningful bits. Works on 64-bit words
//! (any f64, NaN payloads included) and on 32-bit words (values that are
//! f32 widened, whose low 29 mantissa bits are zero as f64 but not as f32).

use super::bits::{BitReader, BitWriter};

/// Field widths for (leading zeros, meaningful length - 1) per word size.
fn fields(word: u32) -> u32 {
    if word == 64 {
        6
    } else {
        5
    }
}

pub fn encode(words: &[u64], word: u32) -> Vec<u8> {
    let f = fields(word);
    let mut w = BitWriter::default();
    let Some((&first, rest)) = words.split_first() else { return w.finish() };
    w.write(first, word);
    let (mut prev, mut window) = (first, None::<(u32, u32)>);
    for &v in rest {
        let x = v ^ prev;
        prev = v;
        if x == 0 {
            w.write(0, 1);
            continue;
        }
        w.write(1, 1);
        let lead = x.leading_zeros() - (64 - word);
        let trail = x.trailing_zeros();
        match window {
            Some((wl, wt)) if lead >= wl && trail >= wt => {
                w.write(0, 1);
                w.write(x >> wt, word - wl - wt);
            }
            _ => {
                let len = word - lead - trail;
                w.write(1, 1);
                w.write(lead as u64, f);
                w.write((len - 1) as u64, f);
                w.write(x >> trail, len);
                window = Some((lead, trail));
            }
        }
    }
    w.finish()
}

/// `n` words from the start of `bytes`, with the number of bytes they took.
pub fn decode(bytes: &[u8], n: usize, word: u32) -> Option<(Vec<u64>, usize)> {
    let f = fields(word);
    let mut r = BitReader::new(bytes);
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Some((out, 0));
    }
    let mut prev = r.read(word)?;
    out.push(prev);
    let mut window = None::<(u32, u32)>;
    for _ in 1..n {
        if r.read(1)? == 1 {
            let (lead, trail) = if r.read(1)? == 0 {
                window?
            } else {
                let lead = r.read(f)? as u32;
                let len = r.read(f)? as u32 + 1;
                let trail = word.checked_sub(lead + len)?;
                window = Some((lead, trail));
                (lead, trail)
            };
            prev ^= r.read(word - lead - trail)? << trail;
        }
        out.push(prev);
    }
    Some((out, r.bytes_used()))
}
