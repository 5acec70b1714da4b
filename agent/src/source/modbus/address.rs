use std::net::SocketAddr;

/// Where a Modbus device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusAddress {
    /// `tcp://HOST:PORT` (port 502 when omitted).
    Tcp(String),
}

impl ModbusAddress {
    pub fn parse(s: &str) -> Result<ModbusAddress, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let with_port = if rest.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit())) {
                rest.to_string()
            } else {
                format!("{rest}:502")
            };
            let (host, port) = with_port.rsplit_once(':').unwrap_or_default();
            if host.is_empty() {
                return Err(format!("`{s}` has no host; write tcp://HOST:PORT"));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => Ok(ModbusAddress::Tcp(with_port)),
                _ => Err(format!("port `{port}` in `{s}` is not a number from 1 to 65535")),
            }
        } else if s.starts_with("rtu://") {
            Err(format!("`{s}`: Modbus RTU over serial is not supported by this build yet; use tcp://HOST:PORT"))
        } else {
            Err(format!("`{s}` is not a Modbus address; write tcp://HOST:PORT"))
        }
    }

    /// Resolves the host now, so a DNS failure is reported as the device's error.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        match self {
            ModbusAddress::Tcp(hp) => tokio::net::lookup_host(hp.as_str())
                .await?
                .next()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{hp} resolves to no address"))),
        }
    }
}

impl std::fmt::Display for ModbusAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModbusAddress::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_addresses_parse_with_default_port() {
        assert_eq!(ModbusAddress::parse("tcp://10.0.0.5:502").unwrap(), ModbusAddress::Tcp("10.0.0.5:502".into()));
        assert_eq!(ModbusAddress::parse("tcp://plc.local").unwrap(), ModbusAddress::Tcp("plc.local:502".into()));
        assert!(ModbusAddress::parse("tcp://:502").is_err());
        assert!(ModbusAddress::parse("tcp://h:70000").is_err());
        assert!(ModbusAddress::parse("udp://h:1").is_err());
    }
}
