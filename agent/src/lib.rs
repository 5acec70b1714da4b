//! citysense-agent: reads sensors at the edge and forwards every reading to the
//! collector, losing none.
//!
//! Data flows one way: `source` (Modbus pollers, MQTT subscriptions) → intake
//! (gives each reading its `seq`) → `outbox` (sled, made durable on arrival) →
//! `uplink` (batches to MQTT, deletes on the collector's ack). This crate owns
//! the edge; it knows nothing of how the collector stores or alerts.

pub mod clock;
pub mod config;
pub mod health;
pub mod outbox;
pub mod probe;
pub mod source;
pub mod stats;
pub mod status;
pub mod trial;
pub mod uplink;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use clock::AgentClock;
use config::{AgentConfig, BufferConfig, WhenFull};
use outbox::{Outbox, OutboxError, SledOutbox};
use shared::clock::{Clock as _, SharedClock};
use source::{Handed, NewReading, Sink};
use stats::DeviceStats;

/// A running agent; `shutdown` stops polling, makes the outbox durable and
/// says offline.
pub struct Agent {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub outbox: Arc<dyn Outbox>,
    pub devices: Vec<Arc<DeviceStats>>,
    pub link: watch::Receiver<uplink::LinkState>,
    /// Where `GET /status` and `/metrics` are served (`[status] listen`).
    pub status_addr: std::net::SocketAddr,
    /// What status and health say about the config; `run` records reloads
    /// in it (a refused one through `reload_refused`).
    pub config_record: status::SharedConfigRecord,
    clock: Arc<AgentClock>,
    /// Sends a health report now rather than at the next period.
    health_now: Arc<tokio::sync::Notify>,
}

/// What an agent is built from besides its config. Tests put in a clock that
/// reads 1970 or 2100.
pub struct Parts {
    /// The wall clock: readings, batches, health, state and status are stamped
    /// with it. Polling intervals and timeouts do not use it.
    pub clock: SharedClock,
}

impl Default for Parts {
    fn default() -> Self {
        Parts { clock: shared::clock::system() }
    }
}

/// The outbox's current storage error, shown by status until a write succeeds.
type StorageError = Arc<std::sync::Mutex<Option<String>>>;

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Secrets(#[from] uplink::SecretsError),
    /// Binding `[status] listen`; the message names it.
    #[error(transparent)]
    Status(#[from] std::io::Error),
    #[error("opening the outbox was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Opens the outbox on the blocking pool: opening reads the store's index
/// (and converts an old store), which can take seconds under a backlog.
async fn open_outbox(b: &BufferConfig) -> Result<SledOutbox, StartError> {
    let (path, max_bytes, when_full) = (b.path.clone(), b.max_bytes.0, b.when_full);
    Ok(tokio::task::spawn_blocking(move || SledOutbox::open(&path, max_bytes, when_full)).await??)
}

impl Agent {
    pub async fn start(config: AgentConfig) -> Result<Agent, StartError> {
        Agent::start_with(config, Parts::default()).await
    }

    /// As `start`, built from `parts`.
    pub async fn start_with(config: AgentConfig, parts: Parts) -> Result<Agent, StartError> {
        let outbox: Arc<dyn Outbox> = Arc::new(open_outbox(&config.buffer).await?);
        Agent::start_on(config, outbox, AgentClock::new(parts.clock)).await
    }

    /// As `start`, but a data directory that cannot be opened (unwritable,
    /// full, not a directory) is retried every `retry` while the status
    /// endpoint reports why, instead of ending the agent. A damaged outbox is
    /// not retried: it needs a person (see `reset-outbox`).
    pub async fn start_patiently(config: AgentConfig, retry: Duration, stop: &mut watch::Receiver<bool>) -> Result<Option<Agent>, StartError> {
        let clock = AgentClock::new(Parts::default().clock);
        let first = match open_outbox(&config.buffer).await {
            Ok(o) => o,
            Err(e @ (StartError::Outbox(OutboxError::Damaged { .. }) | StartError::Interrupted(_))) => return Err(e),
            Err(e) => {
                let error: StorageError = Arc::new(std::sync::Mutex::new(Some(e.to_string())));
                let (degraded_stop, degraded_rx) = watch::channel(false);
                let source = status::StatusSource {
                    gateway: config.gateway.clone(),
                    brokers: config.uplink.broker.texts(),
                    outbox: None,
                    devices: Vec::new(),
                    link: watch::channel(uplink::LinkState::default()).1,
                    storage_error: error.clone(),
                    config: Default::default(),
                    clock: clock.clone(),
                };
                let (_, degraded) = status::serve(*config.status.listen, source, degraded_rx).await?;
                let opened = loop {
                    tracing::error!("{}; retrying every {retry:?}", error.lock().unwrap().as_deref().unwrap_or(""));
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.changed() => break None,
                    }
                    match open_outbox(&config.buffer).await {
                        Ok(o) => break Some(o),
                        Err(e @ (StartError::Outbox(OutboxError::Damaged { .. }) | StartError::Interrupted(_))) => return Err(e),
                        Err(e) => *error.lock().unwrap() = Some(e.to_string()),
                    }
                };
                let _ = degraded_stop.send(true);
                let _ = degraded.await;
                match opened {
                    Some(o) => {
                        tracing::info!(path = %config.buffer.path.display(), "outbox opened after retrying");
                        o
                    }
                    None => return Ok(None),
                }
            }
        };
        Agent::start_on(config, Arc::new(first), clock).await.map(Some)
    }

    async fn start_on(config: AgentConfig, outbox: Arc<dyn Outbox>, clock: Arc<AgentClock>) -> Result<Agent, StartError> {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (durable_tx, durable_rx) = watch::channel(outbox.stats().durable);
        let (paused_tx, paused) = watch::channel(outbox.stats().full && config.buffer.when_full == WhenFull::StopPolling);
        // Each message is a whole poll, and each source waits for its poll to
        // be durable before the next: the disk's pace is the sources' pace.
        let (intake_tx, intake_rx) = mpsc::channel::<Handed>(32);
        let sink = Sink::new(intake_tx, durable_rx.clone());
        let mut tasks = Vec::new();

        let secrets = uplink::Secrets::load(&config.uplink)?;
        let (up, uplink_task) = uplink::start(&config.gateway, &config.uplink, secrets, outbox.clone(), durable_rx, clock.clone(), shutdown.clone());
        tasks.push(uplink_task);

        let mut devices = Vec::new();
        // Devices on one serial line share it: one task per line, one per TCP device.
        let mut buses: std::collections::BTreeMap<String, Vec<source::modbus::poller::Poller>> = Default::default();
        for d in &config.modbus {
            let stats = Arc::new(DeviceStats::new(&d.sensor));
            devices.push(stats.clone());
            let poller = source::modbus::poller::Poller::new(d, stats).with_clock(clock.clone());
            match &poller.address {
                source::modbus::ModbusAddress::Rtu(serial) => buses.entry(serial.path.clone()).or_default().push(poller),
                source::modbus::ModbusAddress::Tcp(_) => tasks.push(tokio::spawn(poller.run(sink.clone(), paused.clone(), shutdown.clone()))),
            }
        }
        for (_, bus) in buses {
            tasks.push(tokio::spawn(source::modbus::poller::run_bus(bus, sink.clone(), paused.clone(), shutdown.clone())));
        }
        for (i, m) in config.mqtt.iter().enumerate() {
            let stats = Arc::new(DeviceStats::new(format!("mqtt[{i}] {}", m.topic)));
            devices.push(stats.clone());
            tasks.push(tokio::spawn(source::mqtt::run(i, config.gateway.clone(), m.clone(), stats, clock.clone(), sink.clone(), paused.clone(), shutdown.clone())));
        }
        drop(sink);

        let storage_error: StorageError = Default::default();
        let config_record: status::SharedConfigRecord = Arc::new(std::sync::Mutex::new(status::ConfigRecord { path: None, loaded_ms: clock.now_ms(), last_reload: None }));
        let flushes = Arc::new(Flushes::default());
        let intake = tokio::spawn(intake(intake_rx, outbox.clone(), paused_tx, config.buffer.when_full, storage_error.clone(), flushes.clone()));
        tasks.push(tokio::spawn(flusher(outbox.clone(), config.buffer.flush.0, durable_tx, intake, storage_error.clone(), flushes, shutdown.clone())));
        let source = status::StatusSource {
            gateway: config.gateway.clone(),
            brokers: config.uplink.broker.texts(),
            outbox: Some(outbox.clone()),
            devices: devices.clone(),
            link: up.link.clone(),
            storage_error,
            config: config_record.clone(),
            clock: clock.clone(),
        };
        let (status_addr, status_task) = status::serve(*config.status.listen, source, shutdown.clone()).await?;
        tasks.push(status_task);
        let every = config.uplink.health_interval.0;
        let health_now = Arc::new(tokio::sync::Notify::new());
        tasks.push(tokio::spawn(health::publish(
            config.gateway.clone(),
            up.client.clone(),
            outbox.clone(),
            devices.clone(),
            clock.clone(),
            config_record.clone(),
            every,
            health_now.clone(),
            shutdown.clone(),
        )));
        Ok(Agent { shutdown: shutdown_tx, tasks, outbox, devices, link: up.link, status_addr, config_record, clock, health_now })
    }

    /// A reload refused for `problems` (one `FILE:LINE: path: message` each):
    /// the agent goes on with its running config, and says so in status and,
    /// at once, in `health/` for the collector's dashboard.
    pub fn reload_refused(&self, problems: Vec<String>) {
        let at_ms = self.clock.now_ms();
        self.config_record.lock().unwrap().last_reload = Some(status::ReloadOutcome { at_ms, accepted: false, problems });
        self.health_now.notify_one();
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // The last handle closes sled, which writes: not on a runtime thread.
        let outbox = self.outbox;
        let _ = tokio::task::spawn_blocking(move || drop(outbox)).await;
    }
}

/// Readings appended and not yet durable, at most (about 0.1 s at 500k
/// readings/s): beyond it the intake waits for the fsync under way.
const MAX_UNFLUSHED: u64 = 50_000;

/// Between intake and flusher: readings are waiting for an fsync, and word
/// when one has landed.
#[derive(Default)]
struct Flushes {
    /// Holds one permit: readings appended while a flush runs make the flusher
    /// go again at once, and one fsync covers all of them (group commit).
    wanted: tokio::sync::Notify,
    done: tokio::sync::Notify,
}

/// Gives readings their `seq` by appending them to the outbox, tells each
/// source which seqs its readings got (the source then waits for them to be
/// durable), and asks the flusher to make them durable at once. On a storage
/// error it holds the readings and retries: sources wait meanwhile instead of
/// producing readings with nowhere to go.
async fn intake(mut rx: mpsc::Receiver<Handed>, outbox: Arc<dyn Outbox>, paused: watch::Sender<bool>, when_full: WhenFull, storage_error: StorageError, flushes: Arc<Flushes>) {
    while let Some(first) = rx.recv().await {
        // Every poll waiting goes in one append; each source hears where its own readings end.
        let mut readings: Vec<NewReading> = first.readings;
        let mut replies = vec![(readings.len(), first.reply)];
        while readings.len() < 10_000 {
            let Ok(more) = rx.try_recv() else { break };
            readings.extend(more.readings);
            replies.push((readings.len(), more.reply));
        }
        // More readings waiting for an fsync than one covers quickly: wait for
        // the one under way rather than hold ever more in memory. Should the
        // disk be the limit, the sources then block on the bounded channel and
        // polling slows down.
        while outbox.stats().unflushed > MAX_UNFLUSHED {
            let landed = flushes.done.notified();
            flushes.wanted.notify_one();
            // A flush that fails (full disk) is retried on the schedule.
            let _ = tokio::time::timeout(Duration::from_secs(1), landed).await;
        }
        loop {
            let ob = outbox.clone();
            let batch = readings.clone();
            // A JoinError only happens when the runtime is being torn down.
            let Ok(appended) = tokio::task::spawn_blocking(move || ob.append(batch)).await else { return };
            match appended {
                Ok(a) => {
                    storage_error.lock().unwrap().take();
                    let total = readings.len() as u64;
                    for (end, reply) in replies.drain(..) {
                        // All stored (consecutive seqs ending at `last_seq`) or all refused.
                        let _ = reply.send((a.refused == 0).then(|| a.last_seq - (total - end as u64)));
                    }
                    if a.dropped > 0 {
                        tracing::warn!(dropped = a.dropped, "buffer full: dropped the oldest readings (buffer.when_full = drop_oldest)");
                    }
                    if a.refused > 0 {
                        tracing::warn!(refused = a.refused, "buffer full: refused new readings and paused polling (buffer.when_full = stop_polling)");
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!("{e}; holding {} readings and retrying in 1s", readings.len());
                    *storage_error.lock().unwrap() = Some(e.to_string());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        flushes.wanted.notify_one();
        if when_full == WhenFull::StopPolling {
            paused.send_if_modified(|p| {
                let full = outbox.stats().full;
                std::mem::replace(p, full) != full
            });
        }
    }
}

/// Makes the outbox durable as soon as readings arrive (group commit: one
/// fsync covers everything appended while the previous one ran, so a reading
/// waits for at most one fsync in progress and one of its own) and tells the
/// uplink how far it may send. `every` is only an upper bound: it records acks
/// when no reading arrives, and retries after a failed flush, which waits for
/// it rather than retrying at once. After the intake has finished (shutdown),
/// one last flush.
async fn flusher(
    outbox: Arc<dyn Outbox>,
    every: Duration,
    durable: watch::Sender<u64>,
    mut intake: JoinHandle<()>,
    storage_error: StorageError,
    flushes: Arc<Flushes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let stopping = if failing {
            tokio::select! {
                _ = ticker.tick() => false,
                _ = shutdown.changed() => true,
            }
        } else {
            tokio::select! {
                biased;
                _ = shutdown.changed() => true,
                _ = flushes.wanted.notified() => false,
                _ = ticker.tick() => false,
            }
        };
        if stopping {
            let _ = (&mut intake).await;
        }
        let ob = outbox.clone();
        let Ok(flushed) = tokio::task::spawn_blocking(move || ob.flush()).await else { return };
        match flushed {
            Ok(seq) => {
                failing = false;
                durable.send_if_modified(|d| std::mem::replace(d, seq) != seq);
            }
            Err(e) => {
                failing = true;
                tracing::error!("{e}");
                *storage_error.lock().unwrap() = Some(e.to_string());
            }
        }
        flushes.done.notify_waiters();
        if stopping {
            return;
        }
        ticker.reset();
    }
}
