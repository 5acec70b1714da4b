//! `up/{gateway}` payloads as the collector receives them: a postcard `Batch`,
//! optionally sealed with an HMAC tag (`shared::auth`). Decoding must never
//! panic, and whatever decodes must survive encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::auth::{open_batch, seal_batch};
use shared::Batch;

/// The key the sealed seeds in corpus/batch were made with.
const KEY: &[u8] = b"citysense-fuzz-batch-key";

fn decode_and_round_trip(bytes: &[u8]) {
    if let Ok(batch) = Batch::decode(bytes) {
        let again = Batch::decode(&batch.encode()).expect("a decoded batch re-encodes to a decodable one");
        assert_eq!(again, batch, "round trip changed the batch");
    }
}

fuzz_target!(|data: &[u8]| {
    // Unauthenticated deployments: the payload is the batch.
    decode_and_round_trip(data);
    // Authenticated deployments: the tag is checked first; only then is the batch decoded.
    if let Some(inner) = open_batch(KEY, data) {
        decode_and_round_trip(inner);
    }
    // Whatever is sealed opens again to the same bytes, and to nothing under another key.
    let sealed = seal_batch(KEY, data.to_vec());
    assert_eq!(open_batch(KEY, &sealed), Some(data));
    assert_eq!(open_batch(b"another-key", &sealed), None);
    if let Some(inner) = open_batch(KEY, &sealed) {
        decode_and_round_trip(inner);
    }
});
