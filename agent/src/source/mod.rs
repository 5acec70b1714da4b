//! Where readings come from: Modbus devices polled on a schedule and MQTT
//! sensors that publish JSON. Every source hands `NewReading`s to the intake,
//! which gives them a `seq` and puts them in the outbox.

pub mod modbus;
pub mod mqtt;
pub mod timestamp;

use shared::Quality;

/// A reading before the outbox has given it a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReading {
    pub sensor: String,
    pub metric: String,
    pub ts_ms: i64,
    pub value: f64,
    pub quality: Quality,
}
