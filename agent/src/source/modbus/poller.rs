//! Polling. A `Link` is one connection (a TCP socket or a serial bus); a
//! `Poller` is one device and its register map. Each TCP device gets its own
//! task and link, so a slow or dead device only delays itself. Devices on one
//! serial line share a link and a task (`run_bus`): requests never overlap on
//! the wire, a silent unit costs only its own timeout, and the others go on.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

use super::address::{Parity, Serial};
use super::register_map::{RegisterMap, Request, Table};
use super::{exception_name, ModbusAddress};
use crate::config::ModbusDevice;
use crate::source::{NewReading, Sink, Taken};
use crate::stats::DeviceStats;
use shared::clock::SharedClock;

/// Why one read failed, worded for the person reading the log.
#[derive(Debug)]
pub enum ReadError {
    /// The device answered; retrying the same request will not help (except busy).
    Exception(tokio_modbus::ExceptionCode),
    /// The request went out and no answer came within the timeout: the read
    /// is abandoned (the connection dropped and made again), though the
    /// device may still act on it (serve a value, move a counter) after.
    NoAnswer(Duration),
    /// No usable answer: the connection is dropped and made again.
    Transport(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Exception(code) => f.write_str(&exception_name(*code)),
            ReadError::NoAnswer(limit) => write!(f, "no answer within {limit:?}"),
            ReadError::Transport(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReadError {}

/// A request that failed after its retries: the device's error in status and health.
#[derive(Debug, thiserror::Error)]
#[error("{address} unit {unit} {} {start}+{count}: {cause}", table.name())]
pub struct RequestFailed {
    address: ModbusAddress,
    unit: u8,
    table: Table,
    start: u16,
    count: u16,
    cause: ReadError,
}

/// A `probe` read that failed.
#[derive(Debug, thiserror::Error)]
#[error("{address} unit {unit}: {cause}")]
pub struct ProbeReadError {
    address: ModbusAddress,
    unit: u8,
    cause: ReadError,
}

/// One connection to devices: opened on first use, dropped after a transport
/// error (on a serial line a late answer would otherwise be read as the next one).
pub struct Link {
    address: ModbusAddress,
    ctx: Option<Context>,
}

impl Link {
    pub fn new(address: ModbusAddress) -> Link {
        Link { address, ctx: None }
    }

    async fn context(&mut self, unit: u8, limit: Duration) -> Result<&mut Context, ReadError> {
        if self.ctx.is_none() {
            let ctx = match &self.address {
                ModbusAddress::Tcp(_) => {
                    let addr = self.address.resolve().await.map_err(|e| ReadError::Transport(format!("cannot resolve: {e}")))?;
                    timeout(limit, tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)))
                        .await
                        .map_err(|_| ReadError::Transport(format!("connect timed out after {limit:?}")))?
                        .map_err(|e| ReadError::Transport(format!("cannot connect: {e}")))?
                }
                ModbusAddress::Rtu(serial) => {
                    let port = open_serial(serial).map_err(|e| ReadError::Transport(format!("cannot open {}: {e}", serial.path)))?;
                    tokio_modbus::client::rtu::attach_slave(port, Slave(unit))
                }
            };
            self.ctx = Some(ctx);
        }
        let ctx = self.ctx.as_mut().expect("opened above");
        ctx.set_slave(Slave(unit));
        Ok(ctx)
    }

    fn reset(&mut self) {
        self.ctx = None;
    }

    /// Silence owed to the line after a frame.
    fn gap(&self) -> Duration {
        match &self.address {
            ModbusAddress::Tcp(_) => Duration::ZERO,
            ModbusAddress::Rtu(s) => s.inter_frame_gap(),
        }
    }

    async fn read(&mut self, unit: u8, table: Table, start: u16, count: u16, limit: Duration) -> Result<Vec<u16>, ReadError> {
        let gap = self.gap();
        let ctx = self.context(unit, limit).await?;
        let result = read_table(ctx, table, start, count, limit).await;
        if matches!(result, Err(ReadError::Transport(_) | ReadError::NoAnswer(_))) {
            self.reset();
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        result
    }
}

fn open_serial(s: &Serial) -> tokio_serial::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPortBuilderExt;
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop = if s.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
    let data = if s.data_bits == 7 { tokio_serial::DataBits::Seven } else { tokio_serial::DataBits::Eight };
    tokio_serial::new(&s.path, s.baud).parity(parity).stop_bits(stop).data_bits(data).open_native_async()
}

pub struct Poller {
    pub sensor: String,
    pub address: ModbusAddress,
    unit: u8,
    pub interval: Duration,
    timeout: Duration,
    retries: u32,
    map: RegisterMap,
    stats: Arc<DeviceStats>,
    /// Stamps readings and the device's poll record (the agent's clock).
    clock: SharedClock,
    /// The time each request's readings were last stamped with (`stamp`).
    stamped: Vec<AtomicI64>,
}

impl Poller {
    pub fn new(device: &ModbusDevice, stats: Arc<DeviceStats>) -> Poller {
        let map = RegisterMap::plan(device.point.iter().map(Into::into).collect(), device.max_gap);
        let stamped = map.requests.iter().map(|_| AtomicI64::new(i64::MIN)).collect();
        Poller {
            sensor: device.sensor.clone(),
            address: (*device.address).clone(),
            unit: device.unit,
            interval: device.interval.0,
            timeout: device.timeout.0,
            retries: device.retries,
            map,
            stats,
            clock: shared::clock::system(),
            stamped,
        }
    }

    /// The same poller, stamping with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Poller {
        self.clock = clock;
        self
    }

    /// Polls one TCP device on its own link until `shutdown` turns true. While
    /// `paused` is true (the outbox is full under `stop_polling`) it skips polls
    /// rather than produce readings that would have nowhere to go.
    pub async fn run(self, sink: Sink, paused: watch::Receiver<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut link = Link::new(self.address.clone());
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if *paused.borrow() {
                continue;
            }
            tokio::select! {
                going = self.poll_and_hand(&mut link, &sink) => if !going { return },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Polls once, hands the readings to the intake and counts the poll only
    /// once they are durable. False when the agent is stopping.
    async fn poll_and_hand(&self, link: &mut Link, sink: &Sink) -> bool {
        let (readings, answered) = self.poll(link).await;
        // Refused readings (stop_polling, outbox full) are counted by the
        // intake; the device did answer.
        if !readings.is_empty() {
            match sink.take(readings).await {
                None => return false,
                Some(Taken::Durable | Taken::Refused) => {}
            }
        }
        if answered {
            self.stats.ok(self.clock.now_ms());
        }
        true
    }

    pub fn unit(&self) -> u8 {
        self.unit
    }

    pub fn map(&self) -> &RegisterMap {
        &self.map
    }

    /// Every request of one poll, answered or failed, in the map's order:
    /// what `citysense-agent test` shows beside the values.
    pub async fn read_all(&self, link: &mut Link) -> Vec<Result<Vec<u16>, RequestFailed>> {
        let mut out = Vec::with_capacity(self.map.requests.len());
        for request in &self.map.requests {
            out.push(self.read_with_retries(link, request).await);
        }
        out
    }

    /// The time for the readings of request `i`, just answered: the clock's,
    /// but always after the time its previous answer got. Two polls can be
    /// answered within one millisecond: after a stall (a loaded machine, a
    /// paused process) the late poll's answer is read only when the stall
    /// ends, and the poll whose tick came due meanwhile goes at once. The
    /// same time twice for one series is one point at the collector (it keys
    /// by series and time), so the second reading would overwrite the first,
    /// acknowledged and lost (issue 16's soak). A clock set back by more than
    /// one interval is followed rather than held back for as long.
    fn stamp(&self, i: usize) -> i64 {
        let now = self.clock.now_ms();
        let last = self.stamped[i].load(Relaxed);
        let interval = self.interval.as_millis().min(i64::MAX as u128) as i64;
        let ts_ms = if now <= last && last - now < interval { last + 1 } else { now };
        self.stamped[i].store(ts_ms, Relaxed);
        ts_ms
    }

    #[cfg(test)]
    async fn poll_once(&self, link: &mut Link) -> Vec<NewReading> {
        self.poll(link).await.0
    }

    /// One poll: its readings, and whether any request was answered. A poll
    /// that failed whole marks the device DOWN here; an answered one is
    /// counted by the caller once its readings are durable.
    async fn poll(&self, link: &mut Link) -> (Vec<NewReading>, bool) {
        let mut out = Vec::new();
        let mut failed = 0;
        for (i, request) in self.map.requests.iter().enumerate() {
            match self.read_with_retries(link, request).await {
                Ok(words) => {
                    let ts_ms = self.stamp(i);
                    for d in self.map.decode(request, &words) {
                        if !d.value.is_finite() {
                            // A NaN/inf register image is how many devices flag a failed
                            // sensor element; it has no value to send, so it is counted.
                            self.stats.error(format!("{}: {} decoded to a non-finite value", self.sensor, self.map.points[d.point].metric), ts_ms);
                            continue;
                        }
                        out.push(NewReading { sensor: self.sensor.clone(), metric: self.map.points[d.point].metric.clone(), ts_ms, value: d.value, quality: d.quality });
                    }
                }
                Err(failure) => {
                    failed += 1;
                    let message = failure.to_string();
                    tracing::warn!(sensor = %self.sensor, address = %self.address, unit = self.unit, "{message}");
                    self.stats.error(message, self.clock.now_ms());
                }
            }
        }
        let answered = failed < self.map.requests.len();
        if !answered {
            self.stats.down(self.clock.now_ms());
        }
        (out, answered)
    }

    async fn read_with_retries(&self, link: &mut Link, request: &Request) -> Result<Vec<u16>, RequestFailed> {
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0;
        let cause = loop {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.interval / 2);
            }
            let cause = match link.read(self.unit, request.table, request.start, request.count, self.timeout).await {
                Ok(words) => return Ok(words),
                Err(e) => e,
            };
            if let ReadError::NoAnswer(limit) = cause {
                // Counted whether or not a retry then succeeds: the device may
                // have served this request after all, a value nobody will see
                // (the fault suite's accounting excuses exactly these).
                self.stats.abandoned();
                tracing::debug!(sensor = %self.sensor, address = %self.address, unit = self.unit, "request abandoned: {} {}+{}: no answer within {limit:?}", request.table.name(), request.start, request.count);
            }
            attempt += 1;
            let busy = matches!(cause, ReadError::Exception(tokio_modbus::ExceptionCode::ServerDeviceBusy));
            if attempt > self.retries || (matches!(cause, ReadError::Exception(_)) && !busy) {
                break cause;
            }
        };
        Err(RequestFailed { address: self.address.clone(), unit: self.unit, table: request.table, start: request.start, count: request.count, cause })
    }
}

/// Polls every device of one serial line in turn on one link, each on its own
/// schedule: the device due first goes next.
pub async fn run_bus(devices: Vec<Poller>, sink: Sink, paused: watch::Receiver<bool>, mut shutdown: watch::Receiver<bool>) {
    let Some(first) = devices.first() else { return };
    let mut link = Link::new(first.address.clone());
    let mut due: Vec<Instant> = vec![Instant::now(); devices.len()];
    loop {
        let (i, at) = due.iter().copied().enumerate().min_by_key(|(_, t)| *t).expect("a bus has devices");
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let d = &devices[i];
        due[i] = (at + d.interval).max(Instant::now());
        if *paused.borrow() {
            continue;
        }
        tokio::select! {
            going = d.poll_and_hand(&mut link, &sink) => if !going { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// One read of `count` registers or bits; bits come back as 0/1 words.
async fn read_table(c: &mut Context, table: Table, start: u16, count: u16, limit: Duration) -> Result<Vec<u16>, ReadError> {
    let bits = |r: Result<Vec<bool>, tokio_modbus::ExceptionCode>| r.map(|v| v.into_iter().take(count as usize).map(u16::from).collect());
    let answer = timeout(limit, async {
        Ok::<_, tokio_modbus::Error>(match table {
            Table::Holding => c.read_holding_registers(start, count).await?,
            Table::Input => c.read_input_registers(start, count).await?,
            Table::Coil => bits(c.read_coils(start, count).await?),
            Table::Discrete => bits(c.read_discrete_inputs(start, count).await?),
        })
    })
    .await
    .map_err(|_| ReadError::NoAnswer(limit))?
    .map_err(|e| ReadError::Transport(e.to_string()))?;
    let words = answer.map_err(ReadError::Exception)?;
    if words.len() < count as usize {
        return Err(ReadError::Transport(format!("short answer: {} of {count} values", words.len())));
    }
    Ok(words)
}

/// Reads once outside any schedule: the commissioning path of `probe`.
pub async fn read_once(address: &ModbusAddress, unit: u8, table: Table, start: u16, count: u16, limit: Duration) -> Result<Vec<u16>, ProbeReadError> {
    let mut link = Link::new(address.clone());
    link.read(unit, table, start, count, limit).await.map_err(|cause| ProbeReadError { address: address.clone(), unit, cause })
}

#[cfg(test)]
mod tests;
