//! End-to-end authentication of what gateways and the collector tell each
//! other, whatever broker sits between them: HMAC-SHA256 under a key only
//! the gateway and the collector hold.
//!
//! - An authenticated `up/{gateway}` payload is the postcard `Batch` followed
//!   by 32 bytes: HMAC(key, batch bytes). The batch names its gateway, so a
//!   batch cannot be moved to another gateway's topic or key.
//! - An authenticated ack carries `"mac"`: hex HMAC(key, "ack/{gateway}/{seq}")
//!   for epoch 0, "ack/{gateway}/{epoch}/{seq}" otherwise, so no one but the
//!   collector can make a gateway drop readings.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const TAG_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m
}

/// `batch` with its tag appended.
pub fn seal_batch(key: &[u8], batch: Vec<u8>) -> Vec<u8> {
    let tag = mac(key, &[&batch]).finalize().into_bytes();
    let mut out = batch;
    out.extend_from_slice(&tag);
    out
}

/// The batch bytes of a sealed payload, if its tag is right.
pub fn open_batch<'a>(key: &[u8], payload: &'a [u8]) -> Option<&'a [u8]> {
    let split = payload.len().checked_sub(TAG_LEN)?;
    let (batch, tag) = payload.split_at(split);
    mac(key, &[batch]).verify_slice(tag).ok().map(|_| batch)
}

fn ack_hmac(key: &[u8], gateway: &str, epoch: u64, seq: crate::Seq) -> HmacSha256 {
    let seq = seq.to_string();
    match epoch {
        0 => mac(key, &[b"ack/", gateway.as_bytes(), b"/", seq.as_bytes()]),
        e => mac(key, &[b"ack/", gateway.as_bytes(), b"/", e.to_string().as_bytes(), b"/", seq.as_bytes()]),
    }
}

pub fn ack_mac(key: &[u8], gateway: &str, epoch: u64, seq: crate::Seq) -> String {
    hex(&ack_hmac(key, gateway, epoch, seq).finalize().into_bytes())
}

pub fn verify_ack(key: &[u8], gateway: &str, epoch: u64, seq: crate::Seq, mac_hex: &str) -> bool {
    let Some(tag) = unhex(mac_hex) else { return false };
    ack_hmac(key, gateway, epoch, seq).verify_slice(&tag).is_ok()
}

/// Hex SHA-256, as passwords and API tokens are kept at rest.
pub fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares a secret with a stored hex SHA-256 without leaking where they differ.
pub fn matches_sha256(secret: &str, stored_hex: &str) -> bool {
    let a = sha256_hex(secret);
    let b = stored_hex.trim().to_ascii_lowercase();
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// 32 random bytes from the kernel, as hex: passwords, keys, tokens.
pub fn random_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex(&b))
}

/// A random number from the OS, e.g. a new outbox's epoch (never 0, which
/// means "before epochs").
pub fn random_u64() -> std::io::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b).max(1))
}

/// Why a secret file could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}: a key must be at least 16 characters")]
    TooShort(std::path::PathBuf),
}

/// A secret read from a file: trimmed, and refused when shorter than 16 characters.
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read { path: path.to_path_buf(), source })?;
    let t = text.trim();
    if t.len() < 16 {
        return Err(SecretError::TooShort(path.to_path_buf()));
    }
    Ok(t.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Seq;

    #[test]
    fn a_sealed_batch_opens_only_with_its_key_and_unaltered() {
        let sealed = seal_batch(b"key-of-gateway-a", b"batch bytes".to_vec());
        assert_eq!(open_batch(b"key-of-gateway-a", &sealed), Some(&b"batch bytes"[..]));
        assert_eq!(open_batch(b"key-of-gateway-b", &sealed), None);
        let mut altered = sealed.clone();
        altered[0] ^= 1;
        assert_eq!(open_batch(b"key-of-gateway-a", &altered), None);
        assert_eq!(open_batch(b"key-of-gateway-a", &sealed[..10]), None);
    }

    #[test]
    fn acks_verify_for_their_gateway_and_seq_only() {
        let m = ack_mac(b"k-a", "gw-a", 0, Seq(42));
        assert!(verify_ack(b"k-a", "gw-a", 0, Seq(42), &m));
        assert!(!verify_ack(b"k-a", "gw-a", 0, Seq(43), &m));
        assert!(!verify_ack(b"k-a", "gw-b", 0, Seq(42), &m));
        assert!(!verify_ack(b"k-b", "gw-a", 0, Seq(42), &m));
        assert!(!verify_ack(b"k-a", "gw-a", 0, Seq(42), "zz"));
        assert!(!verify_ack(b"k-a", "gw-a", 7, Seq(42), &m), "an ack of one epoch is not one of another");
        assert!(verify_ack(b"k-a", "gw-a", 7, Seq(42), &ack_mac(b"k-a", "gw-a", 7, Seq(42))));
    }

    #[test]
    fn hashes_compare_whatever_the_case() {
        let h = sha256_hex("s3cret-token");
        assert!(matches_sha256("s3cret-token", &h.to_uppercase()));
        assert!(!matches_sha256("s3cret-tokem", &h));
        assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
