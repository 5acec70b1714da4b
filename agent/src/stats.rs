//! Counters the agent keeps about itself, read by `health/{gateway}` and status.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

use shared::wire::DeviceHealth;

/// One source's poll record (a Modbus device or an MQTT subscription).
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub sensor: String,
    polls: AtomicU64,
    errors: AtomicU64,
    /// Requests given up for want of an answer within the timeout, retried or not.
    abandoned: AtomicU64,
    last_poll_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    last_error_ms: AtomicI64,
    /// `STATE_*`: a device is DOWN when a whole poll failed (an MQTT source:
    /// its broker connection is lost) and UP again at the next success.
    state: AtomicU8,
    since_ms: AtomicI64,
}

// 0 (the default) is unknown: not polled yet.
const STATE_UP: u8 = 1;
const STATE_DOWN: u8 = 2;

/// A device's state for status: `up`/`down`/`unknown` since a time, and the
/// error that made it DOWN (cleared when it comes UP; the last error and its
/// time stay in `last_error`/`last_error_ms` as history).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceState {
    pub state: String,
    pub since_ms: Option<i64>,
    pub error: Option<String>,
    pub last_error_ms: Option<i64>,
}

impl DeviceStats {
    pub fn new(sensor: impl Into<String>) -> DeviceStats {
        DeviceStats { sensor: sensor.into(), ..Default::default() }
    }

    pub fn ok(&self, ts_ms: i64) {
        self.polls.fetch_add(1, Relaxed);
        self.last_poll_ms.store(ts_ms, Relaxed);
        self.up(ts_ms);
    }

    /// UP from now, unless already UP.
    pub fn up(&self, ts_ms: i64) {
        if self.state.swap(STATE_UP, Relaxed) != STATE_UP {
            self.since_ms.store(ts_ms, Relaxed);
        }
    }

    /// DOWN from now (unless already DOWN): a whole poll failed or the broker connection was lost.
    pub fn down(&self, ts_ms: i64) {
        if self.state.swap(STATE_DOWN, Relaxed) != STATE_DOWN {
            self.since_ms.store(ts_ms, Relaxed);
        }
    }

    /// A failure at `ts_ms` (the agent's clock).
    pub fn error(&self, message: String, ts_ms: i64) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap() = Some(message);
        self.last_error_ms.store(ts_ms, Relaxed);
    }

    pub fn state(&self) -> DeviceState {
        let since = self.since_ms.load(Relaxed);
        let last_error_ms = self.last_error_ms.load(Relaxed);
        let (state, error) = match self.state.load(Relaxed) {
            STATE_UP => ("up", None),
            STATE_DOWN => ("down", self.last_error.lock().unwrap().clone()),
            _ => ("unknown", None),
        };
        DeviceState { state: state.into(), since_ms: (since > 0).then_some(since), error, last_error_ms: (last_error_ms > 0).then_some(last_error_ms) }
    }

    /// A request that timed out: abandoned, whether or not a retry then succeeds.
    pub fn abandoned(&self) {
        self.abandoned.fetch_add(1, Relaxed);
    }

    pub fn abandoned_requests(&self) -> u64 {
        self.abandoned.load(Relaxed)
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
