//! Values a config writes as text with a unit: durations (`500ms`, `1h`)
//! and byte sizes (`512MiB`), parsed once when the file is read.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A humantime duration such as `500ms`, `10s`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration in quotes with its unit, e.g. \"500ms\", \"10s\", \"5m\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s).map(HumanDuration).map_err(|e| E::custom(format!("`{s}` is not a duration ({e}); write e.g. \"500ms\", \"10s\", \"5m\"")))
            }
            // A bare number has no unit: say how to write it rather than "expected a string".
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs its unit and quotes: write \"{n}s\" (or \"{n}ms\")")))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                self.visit_i64(n as i64)
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs its unit and quotes: write \"{n}s\"")))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("`{0}` is not a size; write e.g. \"512MiB\"")]
    Number(String),
    #[error("unknown size unit `{unit}` in `{size}`; use B, KiB, MiB, GiB, KB, MB or GB")]
    Unit { unit: String, size: String },
}

/// A byte size such as `512MiB`, `2GB`, `4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, ByteSizeError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num.parse().map_err(|_| ByteSizeError::Number(s.to_string()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            "TB" => 1_000_000_000_000,
            "TiB" => 1 << 40,
            other => return Err(ByteSizeError::Unit { unit: other.to_string(), size: s.to_string() }),
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A key that takes one text or a list of them, such as a broker address or
/// the brokers of a cluster to fail over between: `"mqtt://a"` or
/// `["mqtt://a", "mqtt://b"]`. An empty list is refused here, so the field's
/// error names it.
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an address in quotes, or a list of them in [ ] to fail over between")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = a.next_element::<String>()? {
                out.push(s);
            }
            if out.is_empty() {
                return Err(serde::de::Error::custom("an empty list: give at least one address"));
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Uplink {
        #[serde(deserialize_with = "one_or_many")]
        broker: Vec<String>,
    }

    #[test]
    fn one_address_or_a_list() {
        assert_eq!(toml::from_str::<Uplink>("broker = \"mqtt://a\"").unwrap().broker, ["mqtt://a"]);
        assert_eq!(toml::from_str::<Uplink>("broker = [\"mqtt://a\", \"mqtt://b\"]").unwrap().broker, ["mqtt://a", "mqtt://b"]);
        let empty = toml::from_str::<Uplink>("broker = []").unwrap_err().to_string();
        assert!(empty.contains("give at least one address"), "{empty}");
        let number = toml::from_str::<Uplink>("broker = 1883").unwrap_err().to_string();
        assert!(number.contains("an address in quotes, or a list of them"), "{number}");
    }
}
