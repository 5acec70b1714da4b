//! Config values written as text with a grammar of their own (broker URLs,
//! Modbus addresses, the status address), parsed while the file is read. This
//! exists so that a bad value is a `check` error on its line and the running
//! agent holds typed values it never parses again, while summaries and status
//! still show the value as the technician wrote it.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};
use shared::url::BrokerUrl;

use crate::source::modbus::ModbusAddress;

/// Text in the file with a grammar of its own, parsed when the file is read.
pub trait ConfigText: Sized {
    type Err: fmt::Display;
    fn parse_text(s: &str) -> Result<Self, Self::Err>;
}

impl ConfigText for BrokerUrl {
    /// `shared::url`'s own message, which names the URL and the fix.
    type Err = shared::url::UrlError;
    fn parse_text(s: &str) -> Result<BrokerUrl, Self::Err> {
        BrokerUrl::parse(s)
    }
}

impl ConfigText for ModbusAddress {
    type Err = crate::source::modbus::AddressError;
    fn parse_text(s: &str) -> Result<ModbusAddress, Self::Err> {
        ModbusAddress::parse(s)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not IP:PORT")]
pub struct NotIpPort(String);

impl ConfigText for SocketAddr {
    type Err = NotIpPort;
    fn parse_text(s: &str) -> Result<SocketAddr, NotIpPort> {
        s.parse().map_err(|_| NotIpPort(s.to_string()))
    }
}

/// A value parsed from the config, with its text as written: summaries, the
/// verbose plan and status show what the technician wrote (`mqtt://broker`,
/// not `mqtt://broker:1883`). Derefs to the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    text: String,
    value: T,
}

impl<T: ConfigText> Written<T> {
    pub fn parse(text: &str) -> Result<Written<T>, T::Err> {
        T::parse_text(text).map(|value| Written { text: text.to_string(), value })
    }
}

impl<T> Written<T> {
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl<T> std::ops::Deref for Written<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> fmt::Display for Written<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de, T: ConfigText> Deserialize<'de> for Written<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Written::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `uplink.broker`: one broker, or the nodes of a cluster in the order to try
/// them (`shared::failover`). Shown as written, comma-separated.
#[derive(Debug, Clone, PartialEq)]
pub struct Brokers(pub Vec<Written<BrokerUrl>>);

impl Brokers {
    pub fn urls(&self) -> Vec<BrokerUrl> {
        self.0.iter().map(|b| (**b).clone()).collect()
    }

    /// Each broker as written, in order.
    pub fn texts(&self) -> Vec<String> {
        self.0.iter().map(|b| b.text().to_string()).collect()
    }

    pub fn any_tls(&self) -> bool {
        self.0.iter().any(|b| b.tls)
    }
}

impl fmt::Display for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.texts().join(", "))
    }
}

impl<'de> Deserialize<'de> for Brokers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let texts = shared::config::one_or_many(d)?;
        texts.iter().map(|t| Written::parse(t).map_err(serde::de::Error::custom)).collect::<Result<_, _>>().map(Brokers)
    }
}
