//! Per-gateway rate limit: a token bucket of `rate` readings per second,
//! holding ten seconds' worth and never less than the largest batch an agent
//! sends (10,000), which must get through eventually. It slows a runaway or
//! hostile gateway; it loses nothing, since a refused batch is not acked.

use std::collections::HashMap;

use shared::clock::SharedClock;

pub struct RateLimit {
    rate: f64,
    clock: SharedClock,
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    at_ms: i64,
    warned_ms: Option<i64>,
}

/// A refusal, and whether it is the first in 10 s (worth a log line).
pub struct Refused {
    pub log: bool,
}

impl RateLimit {
    pub fn new(rate: u32, clock: SharedClock) -> RateLimit {
        RateLimit { rate: rate as f64, clock, buckets: HashMap::new() }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn capacity(&self) -> f64 {
        (self.rate * 10.0).max(10_000.0)
    }

    /// Takes `n` readings from `gateway`'s bucket.
    pub fn admit(&mut self, gateway: &str, n: usize) -> Result<(), Refused> {
        let (now, capacity, rate) = (self.clock.now_ms(), self.capacity(), self.rate);
        let b = self.buckets.entry(gateway.to_string()).or_insert(Bucket { tokens: capacity, at_ms: now, warned_ms: None });
        // A clock that steps back refills nothing.
        let elapsed_s = (now - b.at_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed_s * rate).min(capacity);
        b.at_ms = now;
        if b.tokens >= n as f64 {
            b.tokens -= n as f64;
            return Ok(());
        }
        let log = b.warned_ms.is_none_or(|t| now - t > 10_000);
        if log {
            b.warned_ms = Some(now);
        }
        Err(Refused { log })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::clock::ManualClock;

    #[test]
    fn a_gateway_over_its_rate_is_refused_until_its_bucket_refills() {
        let clock = ManualClock::at(0);
        let mut limit = RateLimit::new(1_000, clock.clone());
        // Ten seconds' worth (10,000) at once, then nothing more.
        assert!(limit.admit("gw", 10_000).is_ok());
        let refused = limit.admit("gw", 1).unwrap_err();
        assert!(refused.log, "the first refusal is logged");
        assert!(!limit.admit("gw", 1).unwrap_err().log, "the next within 10 s is not");
        // Other gateways have their own bucket.
        assert!(limit.admit("other", 5_000).is_ok());
        clock.advance(std::time::Duration::from_secs(1));
        assert!(limit.admit("gw", 1_000).is_ok(), "one second refills 1,000");
        assert!(limit.admit("gw", 1).is_err());
    }
}
