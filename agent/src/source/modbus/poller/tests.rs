//! The poller against a simulated device, on a clock moved by hand.

use std::sync::Arc;
use std::time::Duration;

use shared::clock::{ManualClock, SharedClock};

use super::{Link, Poller};
use crate::config::ModbusDevice;
use crate::source::NewReading;
use crate::stats::DeviceStats;

/// A simulated air-quality device polled every 100 ms, on a clock that
/// moves only when told.
async fn device() -> (sim::RunningCity, Poller, Arc<ManualClock>) {
    #[derive(serde::Deserialize)]
    struct Sources {
        modbus: Vec<ModbusDevice>,
    }
    let city = sim::RunningCity::start(sim::City { air: 1, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    let devices: Vec<_> = city.devices.iter().collect();
    let sources: Sources = toml::from_str(&sim::run::modbus_toml(&devices, Duration::from_millis(100))).unwrap();
    let d = &sources.modbus[0];
    let clock = ManualClock::at(1_800_000_000_000);
    let poller = Poller::new(d, Arc::new(DeviceStats::new(&d.sensor))).with_clock(clock.clone() as SharedClock);
    (city, poller, clock)
}

fn time_of(readings: &[NewReading], metric: &str) -> i64 {
    readings.iter().find(|r| r.metric.as_str() == metric).unwrap_or_else(|| panic!("no {metric} in {readings:?}")).ts_ms
}

/// After a stall (a loaded machine, a paused process) the poll whose tick
/// came due meanwhile goes at once after the late one, and both answers
/// arrive within the same millisecond: the fault suite's power-cut soak
/// lost counter values this way (issue 16), because the collector keys a
/// point by series and time and the second reading overwrote the first.
/// A device's readings are never stamped at or before its previous poll's.
#[tokio::test]
async fn two_polls_within_one_millisecond_get_distinct_times() {
    let (_city, poller, clock) = device().await;
    let mut link = Link::new(poller.address.clone());
    let first = poller.poll_once(&mut link).await;
    let second = poller.poll_once(&mut link).await;
    let third = poller.poll_once(&mut link).await;
    let now = 1_800_000_000_000;
    assert_eq!([time_of(&first, "counter"), time_of(&second, "counter"), time_of(&third, "counter")], [now, now + 1, now + 2]);
    assert_eq!(time_of(&second, "pm25"), now + 1, "another request of the poll, another series: the same rule");
    // Once the clock has moved past them, readings take its time again.
    clock.advance(Duration::from_millis(100));
    assert_eq!(time_of(&poller.poll_once(&mut link).await, "counter"), now + 100);
}

/// A clock set back further than one interval (NTP correcting a clock
/// that ran ahead) is followed, not held at the last stamp for as long
/// as it ran ahead.
#[tokio::test]
async fn a_clock_set_back_by_more_than_an_interval_is_followed() {
    let (_city, poller, clock) = device().await;
    let mut link = Link::new(poller.address.clone());
    poller.poll_once(&mut link).await;
    clock.set(1_700_000_000_000);
    assert_eq!(time_of(&poller.poll_once(&mut link).await, "counter"), 1_700_000_000_000);
}
