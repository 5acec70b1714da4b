//! citysense-sim: a simulated city for demos and tests.
//!
//! Each Modbus device listens on its own loopback port (as each roadside
//! station has its own IP) and computes its registers from the clock on every
//! request. Every device also has a `counter` register (u32 at holding/input
//! 100) that grows by one on each read, so a test can tell from the collector's
//! store whether any polled value was lost or stored twice. Noise sensors
//! publish JSON over MQTT. `Control` forces anomalies: a value, a silent
//! sensor, a dropped device.

pub mod city;
pub mod control;
pub mod control_http;
pub mod modbus;
pub mod mqtt;
pub mod run;

pub use city::{City, Kind, PointSpec, SensorSpec};
pub use control::Control;
pub use run::RunningCity;
