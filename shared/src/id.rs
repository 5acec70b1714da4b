//! Names and numbers that must not be mixed up: a sensor id is not a metric,
//! a gateway id is not a sensor id, a seq is not a count. Each is a newtype
//! that serializes as its inner value (`serde(transparent)`), so the wire
//! formats (postcard batches, JSON) are unchanged.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! name {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(s: impl Into<String>) -> $ty {
                $ty(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $ty {
            fn from(s: &str) -> $ty {
                $ty(s.to_string())
            }
        }

        impl From<String> for $ty {
            fn from(s: String) -> $ty {
                $ty(s)
            }
        }

        impl From<&String> for $ty {
            fn from(s: &String) -> $ty {
                $ty(s.clone())
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$ty> for String {
            fn eq(&self, other: &$ty) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$ty> for &str {
            fn eq(&self, other: &$ty) -> bool {
                *self == other.0
            }
        }
    };
}

name!(
    /// A gateway's id, as in its config's `gateway` and its topics.
    GatewayId
);
name!(
    /// A sensor's id, as in the catalogue.
    SensorId
);
name!(
    /// What a reading measures, e.g. `pm25`, `water_level_m`.
    Metric
);

/// A reading's place in its gateway's sequence: assigned once by the agent's
/// outbox, only ever growing, what the collector deduplicates and acks by.
/// Arithmetic on it is explicit and cannot overflow silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn get(self) -> u64 {
        self.0
    }

    /// The seq after this one; None at the end of the sequence space.
    pub fn next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }

    /// The seq `n` after this one; None past the end of the sequence space.
    pub fn plus(self, n: u64) -> Option<Seq> {
        self.0.checked_add(n).map(Seq)
    }

    /// How many seqs from `self` up to `later` (0 when `later` is not later).
    pub fn until(self, later: Seq) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Seq {
    fn from(n: u64) -> Seq {
        Seq(n)
    }
}

impl From<Seq> for u64 {
    fn from(s: Seq) -> u64 {
        s.0
    }
}

impl PartialEq<u64> for Seq {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

impl PartialOrd<u64> for Seq {
    fn partial_cmp(&self, other: &u64) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(other)
    }
}
