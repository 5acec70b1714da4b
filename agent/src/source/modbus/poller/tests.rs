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

/// A Modbus TCP device whose counter (u32 at holding 100) grows by one per
/// read, and whose first read is answered only after `late`: the request
/// is served, its value gone with the abandoned answer.
async fn late_first_answer(late: Duration) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU32::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                // MBAP header (7 bytes) and a read request (function, start, count).
                let mut req = [0u8; 12];
                while s.read_exact(&mut req).await.is_ok() {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == 1 {
                        tokio::time::sleep(late).await;
                    }
                    let mut answer = vec![req[0], req[1], 0, 0, 0, 7, req[6], req[7], 4];
                    answer.extend_from_slice(&n.to_be_bytes());
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, served)
}

/// A device that answers after the timeout: the request is counted as
/// abandoned (a timeout the retry recovered is no error, but the device
/// served a value nobody saw), and the retry's reading is the one emitted.
#[tokio::test]
async fn a_request_answered_after_the_timeout_is_counted_abandoned_and_the_retry_emitted() {
    let (addr, served) = late_first_answer(Duration::from_millis(400)).await;
    let d: ModbusDevice = toml::from_str(&format!(
        "sensor = \"slow-001\"\naddress = \"tcp://{addr}\"\ninterval = \"1s\"\ntimeout = \"100ms\"\nretries = 1\n\
         [[point]]\nmetric = \"counter\"\ntable = \"holding\"\naddress = 100\ntype = \"u32\"\n"
    ))
    .unwrap();
    let stats = Arc::new(DeviceStats::new(&d.sensor));
    let poller = Poller::new(&d, stats.clone());
    let mut link = Link::new(poller.address.clone());
    let readings = poller.poll_once(&mut link).await;
    let values: Vec<f64> = readings.iter().map(|r| r.value).collect();
    assert_eq!(values, [2.0], "the retry's answer, not the abandoned one");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2, "the device served both requests");
    assert_eq!((stats.abandoned_requests(), stats.errors()), (1, 0), "abandoned, and no error: the retry succeeded");
    // The next poll is answered in time: nothing more is abandoned.
    assert_eq!(poller.poll_once(&mut link).await.iter().map(|r| r.value).collect::<Vec<_>>(), [3.0]);
    assert_eq!(stats.abandoned_requests(), 1);
}
