use std::net::SocketAddr;

/// A Modbus address that does not parse; every variant quotes it and says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}` is not a Modbus address; write tcp://HOST:PORT or rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1")]
    Scheme(String),
    #[error("`{0}` has no host; write tcp://HOST:PORT")]
    NoHost(String),
    #[error("port `{port}` in `{addr}` is not a number from 1 to 65535")]
    Port { port: String, addr: String },
    #[error("`{0}`: write rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1")]
    SerialPath(String),
    #[error("`{pair}` in `{addr}` is not KEY=VALUE")]
    NotKeyValue { pair: String, addr: String },
    #[error("baud `{value}` in `{addr}` is not a rate from 300 to 921600")]
    Baud { value: String, addr: String },
    #[error("parity `{value}` in `{addr}` is not N, E or O")]
    Parity { value: String, addr: String },
    #[error("stop `{value}` in `{addr}` is not 1 or 2")]
    Stop { value: String, addr: String },
    #[error("data `{value}` in `{addr}` is not 7 or 8")]
    Data { value: String, addr: String },
    #[error("unknown setting `{key}` in `{addr}`; use baud, parity, stop, data")]
    UnknownSetting { key: String, addr: String },
}

/// Where a Modbus device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusAddress {
    /// `tcp://HOST:PORT` (port 502 when omitted).
    Tcp(String),
    /// `rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1&data=8`.
    Rtu(Serial),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// A serial line; every device on one `path` shares one bus and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serial {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub stop_bits: u8,
    pub data_bits: u8,
}

impl Serial {
    /// The silence a frame must be followed by (3.5 character times, at least
    /// 1.75 ms above 19200 baud, as the Modbus serial line spec sets).
    pub fn inter_frame_gap(&self) -> std::time::Duration {
        let bits_per_char = 1 + self.data_bits as u32 + u32::from(self.parity != Parity::None) + self.stop_bits as u32;
        let micros = if self.baud > 19_200 { 1_750 } else { 3_500_000 * bits_per_char as u64 / self.baud as u64 };
        std::time::Duration::from_micros(micros.max(1_750))
    }

    fn parse(s: &str, rest: &str) -> Result<Serial, AddressError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() || !path.starts_with('/') {
            return Err(AddressError::SerialPath(s.to_string()));
        }
        let mut serial = Serial { path: path.to_string(), baud: 9600, parity: Parity::None, stop_bits: 1, data_bits: 8 };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| AddressError::NotKeyValue { pair: pair.to_string(), addr: s.to_string() })?;
            let (value, addr) = (v.to_string(), s.to_string());
            match k {
                "baud" => serial.baud = v.parse().ok().filter(|b| (300..=921_600).contains(b)).ok_or(AddressError::Baud { value, addr })?,
                "parity" => {
                    serial.parity = match v {
                        "N" | "n" | "none" => Parity::None,
                        "E" | "e" | "even" => Parity::Even,
                        "O" | "o" | "odd" => Parity::Odd,
                        _ => return Err(AddressError::Parity { value, addr }),
                    }
                }
                "stop" => serial.stop_bits = v.parse().ok().filter(|b| *b == 1 || *b == 2).ok_or(AddressError::Stop { value, addr })?,
                "data" => serial.data_bits = v.parse().ok().filter(|b| *b == 7 || *b == 8).ok_or(AddressError::Data { value, addr })?,
                _ => return Err(AddressError::UnknownSetting { key: k.to_string(), addr }),
            }
        }
        Ok(serial)
    }
}

impl ModbusAddress {
    pub fn parse(s: &str) -> Result<ModbusAddress, AddressError> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let with_port = if rest.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit())) { rest.to_string() } else { format!("{rest}:502") };
            let (host, port) = with_port.rsplit_once(':').unwrap_or_default();
            if host.is_empty() {
                return Err(AddressError::NoHost(s.to_string()));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => Ok(ModbusAddress::Tcp(with_port)),
                _ => Err(AddressError::Port { port: port.to_string(), addr: s.to_string() }),
            }
        } else if let Some(rest) = s.strip_prefix("rtu://") {
            Serial::parse(s, rest).map(ModbusAddress::Rtu)
        } else {
            Err(AddressError::Scheme(s.to_string()))
        }
    }

    /// Resolves a TCP host now, so a DNS failure is reported as the device's error.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        match self {
            ModbusAddress::Tcp(hp) => {
                tokio::net::lookup_host(hp.as_str()).await?.next().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{hp} resolves to no address")))
            }
            ModbusAddress::Rtu(s) => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is a serial line", s.path))),
        }
    }
}

impl std::fmt::Display for ModbusAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModbusAddress::Tcp(hp) => write!(f, "tcp://{hp}"),
            ModbusAddress::Rtu(s) => {
                let p = match s.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                };
                write!(f, "rtu://{}?baud={}&parity={p}&stop={}", s.path, s.baud, s.stop_bits)
            }
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

    #[test]
    fn rtu_addresses_parse_with_serial_settings() {
        let ModbusAddress::Rtu(s) = ModbusAddress::parse("rtu:///dev/ttyUSB0?baud=19200&parity=E&stop=2").unwrap() else { panic!() };
        assert_eq!((s.path.as_str(), s.baud, s.parity, s.stop_bits, s.data_bits), ("/dev/ttyUSB0", 19200, Parity::Even, 2, 8));
        let ModbusAddress::Rtu(d) = ModbusAddress::parse("rtu:///dev/ttyS1").unwrap() else { panic!() };
        assert_eq!((d.baud, d.parity, d.stop_bits), (9600, Parity::None, 1));
        assert!(ModbusAddress::parse("rtu:///dev/ttyS1?baud=12").unwrap_err().to_string().contains("baud"));
        assert!(ModbusAddress::parse("rtu:///dev/ttyS1?parity=X").unwrap_err().to_string().contains("parity"));
        assert!(ModbusAddress::parse("rtu:///dev/ttyS1?speed=9600").unwrap_err().to_string().contains("unknown setting"));
        assert!(ModbusAddress::parse("rtu://ttyS1").is_err());
    }

    #[test]
    fn inter_frame_gap_follows_the_baud_rate() {
        let ModbusAddress::Rtu(s) = ModbusAddress::parse("rtu:///dev/x?baud=9600").unwrap() else { panic!() };
        // 3.5 chars of 10 bits at 9600 baud is about 3.6 ms.
        assert!((3_500..3_700).contains(&s.inter_frame_gap().as_micros()), "{:?}", s.inter_frame_gap());
        let ModbusAddress::Rtu(f) = ModbusAddress::parse("rtu:///dev/x?baud=115200").unwrap() else { panic!() };
        assert_eq!(f.inter_frame_gap().as_micros(), 1_750);
    }
}
