//! Who sees what. The catalogue decides what is open data (`open = true`,
//! with a `licence`); a caller without a token sees only that, and callers
//! without a token share `sta.anonymous_rate` requests per second. A bearer
//! token of any role sees every catalogued sensor. An unknown token is
//! refused (401), not served as anonymous: a typo should not silently hide
//! data. On an API without tokens every caller is anonymous here: opening a
//! sensor is a publication decision, so only open sensors are published.
//! Nothing of the gateways' credentials or the internal MQTT topics is in
//! the model at all (`model`).

use std::sync::Mutex;

use shared::clock::SharedClock;

use crate::catalogue::SensorEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// No token: open sensors only, rate-limited.
    Public,
    /// A token holder: everything catalogued.
    Viewer,
}

impl Audience {
    pub fn sees(self, e: &SensorEntry) -> bool {
        match self {
            Audience::Public => e.open,
            Audience::Viewer => true,
        }
    }
}

/// A token bucket of `rate` requests per second holding two seconds' worth,
/// shared by every anonymous caller.
pub struct Bucket {
    rate: f64,
    clock: SharedClock,
    state: Mutex<(f64, i64)>,
}

impl Bucket {
    pub fn new(rate: u32, clock: SharedClock) -> Bucket {
        let now = clock.now_ms();
        Bucket { rate: rate as f64, clock, state: Mutex::new((rate as f64 * 2.0, now)) }
    }

    pub fn admit(&self) -> bool {
        let now = self.clock.now_ms();
        let mut s = self.state.lock().unwrap();
        let elapsed_s = (now - s.1).max(0) as f64 / 1000.0;
        s.0 = (s.0 + elapsed_s * self.rate).min(self.rate * 2.0);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_callers_share_two_seconds_of_requests() {
        let clock = shared::clock::ManualClock::at(1_000_000);
        let b = Bucket::new(5, clock.clone());
        assert_eq!((0..20).filter(|_| b.admit()).count(), 10, "a burst of two seconds' worth");
        clock.advance(std::time::Duration::from_millis(200));
        assert!(b.admit() && !b.admit(), "refilled at the rate");
        let closed: SensorEntry = toml::from_str("id = \"a\"\nkind = \"k\"").unwrap();
        let open: SensorEntry = toml::from_str("id = \"b\"\nkind = \"k\"\nopen = true\nlicence = \"CC-BY-4.0\"").unwrap();
        assert!(!Audience::Public.sees(&closed) && Audience::Public.sees(&open) && Audience::Viewer.sees(&closed));
    }
}
