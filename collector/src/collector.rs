//! A running collector: the components built in data-path order and joined
//! by channels (see the crate doc for the map).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use shared::clock::SharedClock;
use shared::topics;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::CollectorConfig;
use crate::http::audit::{AuditError, AuditLog};
use crate::ingest::dedup::JumpLimit;
use crate::ingest::rate::RateLimit;
use crate::ingest::{self, Ingest};
use crate::liveness::Liveness;
use crate::messages::{self, Bus, Incoming, IngestControl, RuleInput};
use crate::mqtt::client::{Connector, PublishOnly};
use crate::registry::Registry;
use crate::rules::alerting::Alerting;
use crate::rules::store::{AlertStore, AlertStoreError, SledAlertStore};
use crate::store::lifecycle::{self, LifecycleStats, Policy};
use crate::store::{RedbStore, Store, StoreError, StoreOptions};
use crate::tls::TlsStats;
use crate::{feed, http, mqtt, rules, sink, tls};

/// Why the collector could not start; each names the setting or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Alerts(#[from] AlertStoreError),
    #[error("webhook outbox: {0}")]
    Webhooks(sled::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("gateway batch keys: {0}")]
    Keys(#[from] shared::auth::SecretError),
    #[error(transparent)]
    InfluxToken(#[from] sink::settings::TokenError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Incidents(#[from] crate::incident::IncidentError),
}

/// What a collector is built from besides its config. Tests put in a clock
/// that moves when told, or a store that fails on command.
pub struct Parts {
    pub clock: SharedClock,
    /// The time-series store; by default the redb engine at `store.path`.
    pub store: Option<Arc<dyn Store>>,
}

impl Default for Parts {
    fn default() -> Self {
        Parts { clock: shared::clock::system(), store: None }
    }
}

pub struct Collector {
    pub http_addr: SocketAddr,
    /// Where agents connect: the embedded broker's address or the external one.
    pub mqtt_url: String,
    /// Where this collector's own connections go (behind the front, when there is one).
    pub mqtt_inner: String,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    /// What ingest has done since start.
    pub counters: Arc<ingest::Counters>,
    pub alerting: Arc<Alerting>,
    pub feed: Bus,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http: JoinHandle<()>,
    /// With the log shared by partition: the task that lets this collector's
    /// partitions go at shutdown, awaited while ingest still settles their batches.
    handover: Option<JoinHandle<()>>,
}

impl Collector {
    pub async fn start(config: CollectorConfig) -> Result<Collector, StartError> {
        Collector::start_with(config, Parts::default()).await
    }

    /// As `start`, built from `parts`: the clock wherever a decision depends on
    /// the time (rules, staleness, retention, rate limits, audit times), and
    /// the store when one is given.
    pub async fn start_with(config: CollectorConfig, parts: Parts) -> Result<Collector, StartError> {
        let Parts { clock, store } = parts;
        let (shutdown, stop) = watch::channel(false);
        let liveness = Liveness::default();
        let mut tasks = Vec::new();
        let tls_stats = Arc::new(TlsStats::default());
        let base = Path::new("");

        let store = match store {
            Some(s) => s,
            None => open_store(&config)?,
        };
        let registry = live_view(store.as_ref(), clock.clone())?;
        let mqtt_front = Arc::new(mqtt::front::FrontStats::default());
        let admission = mqtt::Admission { users: config.broker_users(), grants: config.acl(), stats: mqtt_front.clone() };
        let endpoints = Arc::new(mqtt::start(&config.mqtt, admission, tls_stats.clone(), stop.clone()).await?);
        let connector = Connector::new(endpoints.clone(), config.mqtt.max_packet.0 as usize).map_err(|e| mqtt::MqttError::Secret(e.to_string()))?;
        let feed = messages::bus();

        // Rules and alerts, with the webhook outbox and the audit log beside them.
        let side = SledAlertStore::open(&config.store.path.join("alerts"))?;
        let webhooks = Arc::new(feed::webhook::Outbox::open(side.db()).map_err(StartError::Webhooks)?);
        let audit = Arc::new(AuditLog::open(side.db())?);
        let incident_store = Arc::new(crate::incident::store::SledIncidentStore::open(side.db()).map_err(crate::incident::IncidentError::from)?);
        let alert_store: Arc<dyn AlertStore> = Arc::new(side);
        let engine = rules_engine(&config, alert_store.as_ref(), clock.now_ms())?;
        let alerting = Arc::new(Alerting::new(engine, alert_store, feed.clone(), (config.webhook.clone(), webhooks.clone()), clock.clone()));
        let (rules_tx, rules_rx) = mpsc::channel::<RuleInput>(65_536);
        tasks.push(tokio::spawn(alerting.clone().run(rules_rx, Duration::from_millis(250), liveness.register("rules", clock.clone()), stop.clone())));
        // Incidents (`crate::incident`): their departments' webhooks follow the config's in the one outbox.
        let (incidents, hooks) = crate::incident::start(&config, incident_store, alerting.clone(), feed.clone(), webhooks.clone(), clock.clone())?;
        tasks.push(tokio::spawn(incidents.clone().run(Duration::from_millis(250), stop.clone())));
        let speaking = match &config.cluster {
            Some(cluster) => {
                let link = crate::cluster::log::Link::new(cluster, endpoints.login.clone(), &config.store.path)?;
                let speaking = if link.partitions().is_some() {
                    // Each collector processes its own partitions, so it announces what it processed.
                    crate::cluster::speaker::always()
                } else {
                    let (tx, rx) = watch::channel(crate::cluster::speaker::Turn::SILENT);
                    tasks.push(tokio::spawn(crate::cluster::speaker::run(link.clone(), cluster.name(), tx, stop.clone())));
                    rx
                };
                let targets = crate::cluster::handling::Targets { alerting: alerting.clone(), incidents: incidents.clone() };
                let (work, task) = crate::cluster::handling::start(link, cluster.name(), targets, stop.clone());
                let incident_work = work.clone();
                alerting.set_share(Arc::new(move |h| {
                    let _ = work.send(crate::cluster::handling::Op::Alert(h));
                }));
                incidents.set_share(Arc::new(move |w| {
                    let _ = incident_work.send(crate::cluster::handling::Op::Incident(w));
                }));
                tasks.push(task);
                speaking
            }
            None => crate::cluster::speaker::always(),
        };
        tasks.push(tokio::spawn(feed::webhook::run(webhooks, hooks, speaking.clone(), stop.clone())));

        // Ingest: one connection hears batches, another sends the acks.
        let (ingest_tx, ingest_rx) = mpsc::channel::<Incoming>(1024);
        let up_filter = match &config.mqtt.shared_group {
            Some(g) => format!("$share/{g}/{}", topics::UP_FILTER),
            None => topics::UP_FILTER.to_string(),
        };
        let mut subscriptions = vec![(topics::STATE_FILTER.into(), QoS::AtLeastOnce), (topics::HEALTH_FILTER.into(), QoS::AtMostOnce)];
        let (ingest_control, control_rx) = mpsc::channel::<IngestControl>(16);
        let (mut holdings, mut progress, mut handover) = (None, None, None);
        // What the API reads: this collector's store, or the city's when collectors share the log.
        let mut readable = store.clone();
        let (mut view_stats, mut claims) = (None, None);
        match &config.cluster {
            // Batches come from the cluster's log, not straight off MQTT.
            Some(cluster) => {
                let log = crate::cluster::log::Link::new(cluster, endpoints.login.clone(), &config.store.path)?;
                match log.partitions() {
                    Some(partitions) => {
                        let held = crate::cluster::holdings::Holdings::new(partitions);
                        alerting.set_scope(held.clone());
                        let (out, task) = crate::cluster::progress::start(log.clone(), partitions, stop.clone());
                        tasks.push(task);
                        progress = Some(out);
                        let (replicate, task) = crate::cluster::alerts::start(log.clone(), held.clone(), stop.clone());
                        tasks.push(task);
                        alerting.set_replicate(replicate);
                        alerting.number_from(crate::cluster::alerts::id_base(&cluster.name()));
                        tasks.push(tokio::spawn(crate::cluster::alerts::watch(log.clone(), alerting.clone(), stop.clone())));
                        let (out, task) = crate::cluster::bindings::start(log.clone(), ingest_control.clone(), stop.clone());
                        tasks.push(task);
                        claims = Some(out);
                        let (stats, task) = crate::cluster::view::start(log.clone(), cluster.name(), held.clone(), registry.clone(), feed.clone(), stop.clone());
                        tasks.push(task);
                        view_stats = Some(stats);
                        tasks.push(tokio::spawn(crate::cluster::history::serve(log.clone(), cluster.name(), store.clone(), stop.clone())));
                        let client = log.connect("citysense-collector-city-history").await.map_err(|e| crate::cluster::ClusterError::Connect(e.to_string()))?;
                        readable = Arc::new(crate::cluster::history::CityStore::new(store.clone(), client, held.clone(), cluster.name()));
                        let to = crate::cluster::assignment::Work { batches: ingest_tx.clone(), control: ingest_control.clone(), alerting: alerting.clone() };
                        let beat = liveness.register("batch_log", clock.clone());
                        handover = Some(tokio::spawn(crate::cluster::assignment::run(log, cluster.name(), held.clone(), to, beat, stop.clone())));
                        holdings = Some(held);
                    }
                    None => tasks.push(tokio::spawn(log.run(ingest_tx.clone(), liveness.register("batch_log", clock.clone()), stop.clone()))),
                }
            }
            None => subscriptions.insert(0, (up_filter, QoS::AtLeastOnce)),
        }
        let router = mqtt::inbound::Router { ingest: ingest_tx, rules: rules_tx.clone(), registry: registry.clone(), feed: feed.clone() };
        let mut link = connector.connect("", 1024, subscriptions, router, stop.clone());
        tasks.push(link.task);
        let acks = connector.connect("-acks", 4096, Vec::new(), PublishOnly, stop.clone());
        tasks.push(acks.task);
        let forwarded = Arc::new(Notify::new());
        let keys = config.batch_keys(base)?;
        let links = ingest::Links { acks: acks.client, rules: rules_tx, feed: feed.clone(), forwarded: forwarded.clone(), progress, claims };
        let counters = Arc::new(ingest::Counters::default());
        let admission = ingest::Admission { keys, rate: RateLimit::new(config.mqtt.gateway_rate, clock.clone()) };
        let limit = JumpLimit { per_second: config.mqtt.gateway_rate as u64, slack: config.ingest.seq_jump_slack };
        let health = ingest::Health { ingest: liveness.register("ingest", clock.clone()), store: liveness.register("store", clock.clone()) };
        let retention = Arc::new(Policy::new(config.store.keep, config.store.retention.clone(), &config.sensor));
        let catalogue = Arc::new(config.sensor.clone());
        let trust = ingest::Trust {
            catalogue: catalogue.clone(),
            // Without series there is no raw retention to fall out of.
            clocks: ingest::clock::ClockPolicy::new(&config.ingest.clock, &config.sensor, config.store.series.then(|| retention.clone())),
        };
        let ingest = Ingest::new(
            store.clone(),
            registry.clone(),
            counters.clone(),
            links,
            ingest::Policy { admission, sequencing: ingest::Sequencing { limit, clock: clock.clone() }, trust, in_flight_readings: config.ingest.in_flight_readings },
            health,
        )?;
        tasks.push(tokio::spawn(ingest.run(ingest_rx, control_rx)));

        // Store lifecycle and the InfluxDB sink.
        let lifecycle_stats = Arc::new(LifecycleStats::default());
        if config.store.series {
            // A gateway silent for a minute is not waited for.
            let view = registry.clone();
            let arrived: lifecycle::Arrived = Arc::new(move |now| view.arrived_until(now, 60_000));
            tasks.push(tokio::spawn(lifecycle::run(store.clone(), retention, config.store.expire_every.0, lifecycle_stats.clone(), (clock.clone(), arrived), stop.clone())));
        }
        let mut sink_stats = None;
        if let Some(influx) = &config.influxdb {
            let sink = sink::InfluxSink::new(influx, influx.token(base)?, &config.sensor);
            sink_stats = Some(sink.stats.clone());
            tasks.push(tokio::spawn(sink.run(store.clone(), forwarded, liveness.register("sink", clock.clone()), stop.clone())));
        }

        // Feeds over MQTT.
        let live = connector.connect("-live", 4096, Vec::new(), PublishOnly, stop.clone());
        let alerts = connector.connect("-alerts", 1024, Vec::new(), PublishOnly, stop.clone());
        let feed_stats = Arc::new(feed::FeedStats::default());
        tasks.push(tokio::spawn(feed::mqtt::live(feed.clone(), live.client, config.mqtt.live_rate, feed_stats.clone(), speaking.clone())));
        tasks.push(tokio::spawn(feed::mqtt::alerts(feed.clone(), alerts.client, speaking.clone())));
        tasks.extend([live.task, alerts.task]);
        let incident_link = connector.connect("-incidents", 1024, Vec::new(), PublishOnly, stop.clone());
        tasks.push(tokio::spawn(crate::incident::feed::publish(feed.clone(), incident_link.client, speaking.clone())));
        tasks.push(incident_link.task);

        // Ready means subscribed: a batch published after `start` returns is
        // heard. An external broker that is down does not hold start-up up.
        if tokio::time::timeout(Duration::from_secs(5), link.ready.wait_for(|r| *r)).await.is_err() {
            tracing::warn!("not subscribed to {} after 5 s; going on, batches will arrive once it is reachable", endpoints.inner);
        }

        let catalogue_for_sta = catalogue.clone();
        let sta = Arc::new(crate::sta::Sta::new(config.sta.clone(), endpoints.public.to_string(), clock.clone()));
        let city = Arc::new(crate::district::City::new(config.map.clone(), registry.clone(), &catalogue, alerting.clone(), clock.clone()));
        tasks.push(tokio::spawn(city.clone().sample(stop.clone())));
        let state = http::AppState {
            city,
            feed_stats,
            view: view_stats,
            store: readable,
            registry: registry.clone(),
            counters: counters.clone(),
            catalogue,
            alerting: alerting.clone(),
            incidents,
            feed: feed.clone(),
            started: std::time::Instant::now(),
            shutdown: stop.clone(),
            sink: sink_stats,
            lifecycle: lifecycle_stats,
            access: http::auth::Access::new(config.auth.as_ref(), &config.http, audit.clone(), clock.clone()),
            tls: tls_stats.clone(),
            mqtt_front,
            conn_limit: crate::conn_limit::ConnLimit::new(config.http.max_connections, config.http.max_connections_per_peer),
            audit,
            clock,
            ingest: ingest_control,
            liveness,
            sta,
            speaking: speaking.clone(),
            holdings,
            known_gateways: Arc::new(config.gateway.iter().map(|g| g.id.to_string()).chain(config.sensor.iter().flat_map(|s| s.owners()).map(|g| g.to_string())).collect()),
        };
        let (http_addr, http) = http::serve(&config.http, state, tls_stats, stop.clone()).await?;
        // SensorThings updates, linking to the HTTP API just started.
        let sta_link = connector.connect("-sta", 4096, Vec::new(), PublishOnly, stop);
        let sta_base = crate::sta::base_url(http_addr, config.http.tls.is_some());
        tasks.push(tokio::spawn(crate::sta::mqtt::publish(feed.clone(), sta_link.client, catalogue_for_sta, sta_base, speaking.clone())));
        tasks.push(sta_link.task);
        Ok(Collector {
            http_addr,
            mqtt_url: endpoints.public.to_string(),
            mqtt_inner: endpoints.inner.to_string(),
            store,
            registry,
            counters,
            alerting,
            feed,
            shutdown,
            tasks,
            http,
            handover,
        })
    }

    /// Stops serving (open streams end, requests in flight finish), then stops
    /// ingest and syncs the store. Once it returns, nothing holds the stores.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(mut h) = self.handover {
            // Handed back now, the others take the partitions at once rather than when the leases expire.
            if tokio::time::timeout(Duration::from_secs(10), &mut h).await.is_err() {
                h.abort();
            }
        }
        let mut http = self.http;
        if tokio::time::timeout(Duration::from_secs(5), &mut http).await.is_err() {
            http.abort();
        }
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        if let Err(e) = self.store.sync() {
            tracing::error!("{e}");
        }
    }
}

fn open_store(config: &CollectorConfig) -> Result<Arc<dyn Store>, StoreError> {
    let options = StoreOptions { keep_series: config.store.series, forward: config.influxdb.is_some(), cache_bytes: config.store.cache.0 as usize, ..StoreOptions::default() };
    Ok(Arc::new(RedbStore::open_with(&config.store.path, options)?))
}

/// The live view, seeded with each series' last stored sample.
fn live_view(store: &dyn Store, clock: SharedClock) -> Result<Arc<Registry>, StoreError> {
    let registry = Arc::new(Registry::new(clock));
    for (sensor, metric) in store.series() {
        if let Some(s) = store.last(&sensor, &metric)? {
            registry.seed(&sensor, &metric, s);
        }
    }
    Ok(registry)
}

/// The rule engine with the config's rules and those made over the API (a
/// rule in the config file wins over one of the same id), and the alerts
/// open when the collector last stopped.
fn rules_engine(config: &CollectorConfig, store: &dyn AlertStore, now_ms: i64) -> Result<rules::Engine, AlertStoreError> {
    let mut all_rules = config.rule.clone();
    for r in store.rules()? {
        if !all_rules.iter().any(|c| c.id == r.id) {
            all_rules.push(r);
        }
    }
    let catalogue =
        config.sensor.iter().map(|s| (s.id.clone(), rules::SensorInfo { kind: Some(s.kind.clone()), district: s.district.clone(), gateway: s.gateway.clone() })).collect();
    Ok(rules::Engine::new(all_rules, catalogue, store.alerts()?, now_ms).with_max_offset(config.ingest.clock.max_offset.0))
}
