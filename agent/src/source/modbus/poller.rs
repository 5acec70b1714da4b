//! `Poller`: one task per Modbus TCP device. A device that is slow, refuses
//! connections or answers with exceptions only ever delays its own task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, MissedTickBehavior};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::Slave;

use super::register_map::{RegisterMap, Request, Table};
use super::{exception_name, ModbusAddress};
use crate::config::ModbusDevice;
use crate::source::NewReading;
use crate::stats::DeviceStats;
use shared::Quality;

pub struct Poller {
    sensor: String,
    address: ModbusAddress,
    unit: u8,
    interval: Duration,
    timeout: Duration,
    retries: u32,
    map: RegisterMap,
    stats: Arc<DeviceStats>,
}

/// Why one read failed, worded for the person reading the log.
#[derive(Debug)]
enum ReadError {
    /// The device answered; retrying the same request will not help (except busy).
    Exception(tokio_modbus::ExceptionCode),
    /// No usable answer: the connection is dropped and made again.
    Transport(String),
}

impl Poller {
    pub fn new(device: &ModbusDevice, stats: Arc<DeviceStats>) -> Result<Poller, String> {
        Ok(Poller {
            sensor: device.sensor.clone(),
            address: ModbusAddress::parse(&device.address)?,
            unit: device.unit,
            interval: device.interval.0,
            timeout: device.timeout.0,
            retries: device.retries,
            map: RegisterMap::plan(device.point.iter().map(Into::into).collect(), device.max_gap),
            stats,
        })
    }

    /// Polls until `shutdown` turns true. While `paused` is true (the outbox is
    /// full under `stop_polling`) it skips polls rather than produce readings
    /// that would have nowhere to go.
    pub async fn run(self, sink: mpsc::Sender<Vec<NewReading>>, paused: watch::Receiver<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ctx: Option<Context> = None;
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
            let readings = self.poll_once(&mut ctx).await;
            if !readings.is_empty() && sink.send(readings).await.is_err() {
                return;
            }
        }
    }

    async fn poll_once(&self, ctx: &mut Option<Context>) -> Vec<NewReading> {
        let mut out = Vec::new();
        let mut failed = 0;
        for request in &self.map.requests {
            match self.read_with_retries(ctx, request).await {
                Ok(words) => {
                    let ts_ms = shared::now_ms();
                    for (i, value) in self.map.decode(request, &words) {
                        let quality = if value.is_finite() { Quality::Good } else { Quality::Bad };
                        if quality == Quality::Bad {
                            // A NaN/inf register image is how many devices flag a failed
                            // sensor element; it has no value to send, so it is counted.
                            self.stats.error(format!("{}: {} decoded to a non-finite value", self.sensor, self.map.points[i].metric));
                            continue;
                        }
                        out.push(NewReading { sensor: self.sensor.clone(), metric: self.map.points[i].metric.clone(), ts_ms, value, quality });
                    }
                }
                Err(message) => {
                    failed += 1;
                    tracing::warn!(sensor = %self.sensor, address = %self.address, unit = self.unit, "{message}");
                    self.stats.error(message);
                }
            }
        }
        if failed < self.map.requests.len() {
            self.stats.ok(shared::now_ms());
        }
        out
    }

    async fn read_with_retries(&self, ctx: &mut Option<Context>, request: &Request) -> Result<Vec<u16>, String> {
        let mut backoff = Duration::from_millis(50);
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.interval / 2);
            }
            match self.read(ctx, request).await {
                Ok(words) => return Ok(words),
                Err(ReadError::Exception(code)) => {
                    last = format!("{} {} {}+{}: {}", self.address, request.table.name(), request.start, request.count, exception_name(code));
                    if code != tokio_modbus::ExceptionCode::ServerDeviceBusy {
                        break;
                    }
                }
                Err(ReadError::Transport(e)) => {
                    *ctx = None;
                    last = format!("{} unit {} {} {}+{}: {e}", self.address, self.unit, request.table.name(), request.start, request.count);
                }
            }
        }
        Err(last)
    }

    async fn read(&self, ctx: &mut Option<Context>, request: &Request) -> Result<Vec<u16>, ReadError> {
        if ctx.is_none() {
            let addr = self.address.resolve().await.map_err(|e| ReadError::Transport(format!("cannot resolve: {e}")))?;
            let c = timeout(self.timeout, tokio_modbus::client::tcp::connect_slave(addr, Slave(self.unit)))
                .await
                .map_err(|_| ReadError::Transport(format!("connect timed out after {:?}", self.timeout)))?
                .map_err(|e| ReadError::Transport(format!("cannot connect: {e}")))?;
            *ctx = Some(c);
        }
        let c = ctx.as_mut().expect("connected above");
        read_table(c, request.table, request.start, request.count, self.timeout).await
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
    .map_err(|_| ReadError::Transport(format!("no answer within {limit:?}")))?
    .map_err(|e| ReadError::Transport(e.to_string()))?;
    let words = answer.map_err(ReadError::Exception)?;
    if words.len() < count as usize {
        return Err(ReadError::Transport(format!("short answer: {} of {count} values", words.len())));
    }
    Ok(words)
}

/// Reads once outside any schedule: the commissioning path of `probe`.
pub async fn read_once(address: &ModbusAddress, unit: u8, table: Table, start: u16, count: u16, limit: Duration) -> Result<Vec<u16>, String> {
    let addr = address.resolve().await.map_err(|e| format!("{address}: cannot resolve: {e}"))?;
    let mut c = timeout(limit, tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)))
        .await
        .map_err(|_| format!("{address}: connect timed out after {limit:?}"))?
        .map_err(|e| format!("{address}: cannot connect: {e}"))?;
    read_table(&mut c, table, start, count, limit).await.map_err(|e| match e {
        ReadError::Exception(code) => format!("{address} unit {unit}: {}", exception_name(code)),
        ReadError::Transport(m) => format!("{address} unit {unit}: {m}"),
    })
}
