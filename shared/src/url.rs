//! Broker addresses as technicians write them: `mqtt://host:port` or `mqtts://host:port`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Why a broker URL was refused; each message quotes what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` is not a broker URL; write mqtt://HOST:PORT or mqtts://HOST:PORT")]
    Scheme(String),
    #[error("`{0}` must be just scheme://HOST[:PORT]")]
    Path(String),
    #[error("port `{port}` in `{url}` is not a number from 1 to 65535")]
    Port { port: String, url: String },
    #[error("port 0 in `{0}` cannot be connected to")]
    PortZero(String),
    #[error("`{0}` has no host")]
    NoHost(String),
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, UrlError> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(UrlError::Scheme(s.to_string()));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('?') {
            return Err(UrlError::Path(s.to_string()));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| UrlError::Port { port: p.to_string(), url: s.to_string() })?;
                if port == 0 {
                    return Err(UrlError::PortZero(s.to_string()));
                }
                (h, port)
            }
            _ => (rest, default_port),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(s.to_string()));
        }
        Ok(BrokerUrl { tls, host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "mqtts" } else { "mqtt" }, self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_and_default_ports() {
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap().port, 1884);
        let u = BrokerUrl::parse("mqtts://broker.city").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 8883);
        assert!(BrokerUrl::parse("http://x:1").is_err());
        assert!(BrokerUrl::parse("mqtt://x:99999").is_err());
        assert!(BrokerUrl::parse("mqtt://:1883").is_err());
    }
}
