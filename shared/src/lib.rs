//! The language both ends of citysense speak: the data model (`Reading`, `Batch`),
//! the wire codec, the MQTT topic names, and the config diagnostics that both
//! binaries print. Nothing here does I/O; agent and collector own that.

pub mod auth;
pub mod batch;
pub mod clock;
pub mod config;
pub mod config_hints;
pub mod failover;
pub mod id;
pub mod modbus;
pub mod reading;
pub mod topics;
pub mod url;
pub mod wire;

pub use batch::{Batch, BatchError, BATCH_VERSION};
pub use id::{GatewayId, Metric, SensorId, Seq};
pub use reading::{Quality, Reading, Sample};

/// Milliseconds since the Unix epoch, UTC: the only clock representation on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
