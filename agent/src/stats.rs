//! Counters the agent keeps about itself, read by `health/{gateway}` and status.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use shared::wire::DeviceHealth;

/// One source's poll record (a Modbus device or an MQTT subscription).
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub sensor: String,
    polls: AtomicU64,
    errors: AtomicU64,
    last_poll_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

impl DeviceStats {
    pub fn new(sensor: impl Into<String>) -> DeviceStats {
        DeviceStats { sensor: sensor.into(), ..Default::default() }
    }

    pub fn ok(&self, ts_ms: i64) {
        self.polls.fetch_add(1, Relaxed);
        self.last_poll_ms.store(ts_ms, Relaxed);
    }

    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap() = Some(message);
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    pub fn snapshot(&self) -> DeviceHealth {
        let last = self.last_poll_ms.load(Relaxed);
        DeviceHealth {
            sensor: self.sensor.clone(),
            polls: self.polls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            last_poll_ms: (last > 0).then_some(last),
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }
}
