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
