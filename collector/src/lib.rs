//! citysense-collector, the city brain: receives batches from many gateways,
//! stores each reading exactly once, and serves the catalogue, gateways and
//! series over HTTP.
//!
//! Data flows one way: `broker` (MQTT in) → `ingest` (decode, `dedup`, `store`,
//! ack) → `registry` (live view) → `api`. `demo` wires a whole simulated city
//! around it in one process.

pub mod alerting;
pub mod acl;
pub mod api;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod config;
pub mod dedup;
pub mod demo;
pub mod export;
pub mod feed;
pub mod front;
pub mod ingest;
pub mod lifecycle;
pub mod lineproto;
pub mod registry;
pub mod rules;
pub mod sink;
pub mod store;
pub mod web;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use config::CollectorConfig;
use ingest::{Incoming, Ingest};
use registry::{Latest, Registry};
use shared::topics;
use shared::url::BrokerUrl;
use shared::wire::{Health, State};
use store::{RedbStore, Store, StoreOptions};

/// The MQTT user this collector's own connections use when the broker checks passwords.
pub const INTERNAL_USER: &str = "citysense-collector";

pub struct Collector {
    pub http_addr: SocketAddr,
    /// Where agents connect: the embedded broker's address or the external one.
    pub mqtt_url: String,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub alerting: Arc<alerting::Alerting>,
    pub feed: feed::Bus,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http: JoinHandle<()>,
}

impl Collector {
    pub async fn start(config: CollectorConfig) -> anyhow::Result<Collector> {
        let store_options = StoreOptions { keep_series: config.store.series, forward: config.influxdb.is_some() };
        let store: Arc<dyn Store> = Arc::new(RedbStore::open_with(&config.store.path, store_options)?);
        let registry = Arc::new(Registry::default());
        for (sensor, metric) in store.series() {
            if let Some(s) = store.last(&sensor, &metric)? {
                registry.seed(&sensor, &metric, Latest { ts_ms: s.ts_ms, value: s.value, quality: s.quality });
            }
        }
        let max_packet = config.mqtt.max_packet.0 as usize;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tls_stats = Arc::new(front::TlsStats::default());
        let base = Path::new("");
        // With users, the broker admits only them, and this collector's own
        // connections use a password made for this run.
        let mut users = config.broker_users();
        let internal_password = users.as_ref().map(|_| shared::auth::random_secret()).transpose()?;
        if let (Some(u), Some(p)) = (users.as_mut(), &internal_password) {
            u.insert(INTERNAL_USER.to_string(), shared::auth::sha256_hex(p));
        }
        // `broker`: where this collector connects; `public`: what agents are told.
        let (broker, public) = match (&config.mqtt.external, config.mqtt_listen()) {
            (Some(url), _) => {
                let u = BrokerUrl::parse(url).map_err(anyhow::Error::msg)?;
                (u.clone(), u)
            }
            (None, Some(listen)) => {
                // With users, clients reach the broker only through a front that
                // enforces their topic grants; with TLS, through one that also
                // terminates TLS. Otherwise they reach it directly.
                let acl: Option<front::MqttAcl> = users.as_ref().map(|_| Arc::new((config.acl(), max_packet)));
                let users = users.map(Arc::new);
                if acl.is_none() && config.mqtt.tls.is_none() {
                    let addr = tokio::task::spawn_blocking(move || broker::start_embedded(listen, max_packet, users)).await??;
                    let u = BrokerUrl { tls: false, host: addr.ip().to_string(), port: addr.port() };
                    (u.clone(), u)
                } else {
                    let inner = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                    let addr = tokio::task::spawn_blocking(move || broker::start_embedded(inner, max_packet, users)).await??;
                    let tls = config.mqtt.tls.as_ref().map(|f| front::server_config(f, base)).transpose()?;
                    let is_tls = tls.is_some();
                    let public = front::front(&listen.to_string(), tls, addr, "MQTT", tls_stats.clone(), acl, shutdown_rx.clone()).await?;
                    (BrokerUrl { tls: false, host: addr.ip().to_string(), port: addr.port() }, BrokerUrl { tls: is_tls, host: public.ip().to_string(), port: public.port() })
                }
            }
            (None, None) => anyhow::bail!("mqtt.listen is not IP:PORT"),
        };
        let mqtt_password = match (&config.mqtt.password_file, &internal_password) {
            (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("reading mqtt.password_file {}", f.display()))?.trim().to_string(),
            (None, Some(p)) => p.clone(),
            (None, None) => String::new(),
        };
        let mqtt_user = config.mqtt.username.clone().or(internal_password.as_ref().map(|_| INTERNAL_USER.to_string()));
        // The collector's own connections to the broker: `role` names each.
        let client_for = |role: &str, queue: usize| {
            let mut o = MqttOptions::new(format!("citysense-collector-{}{role}", std::process::id()), broker.host.clone(), broker.port);
            o.set_keep_alive(Duration::from_secs(15));
            o.set_max_packet_size(max_packet, max_packet);
            if let Some(user) = &mqtt_user {
                o.set_credentials(user.clone(), mqtt_password.clone());
            }
            let (client, mut eventloop) = AsyncClient::new(o, queue);
            // Acks and alerts are small, latency-bound packets: no Nagle delay.
            eventloop.network_options.set_tcp_nodelay(true);
            (client, eventloop)
        };
        let (client, eventloop) = client_for("", 1024);
        let (tx, rx) = mpsc::channel::<Incoming>(1024);

        let sled_alerts = rules::store::SledAlertStore::open(&config.store.path.join("alerts")).map_err(anyhow::Error::msg)?;
        let webhook_outbox = Arc::new(feed::webhook::Outbox::open(sled_alerts.db()).map_err(anyhow::Error::msg)?);
        let audit = Arc::new(audit::AuditLog::open(sled_alerts.db()).map_err(anyhow::Error::msg)?);
        let alert_store: Arc<dyn rules::store::AlertStore> = Arc::new(sled_alerts);
        let mut all_rules = config.rule.clone();
        for r in alert_store.rules().map_err(anyhow::Error::msg)? {
            // A rule in the config file wins over one of the same id made over the API.
            if !all_rules.iter().any(|c| c.id == r.id) {
                all_rules.push(r);
            }
        }
        let catalogue = config
            .sensor
            .iter()
            .map(|s| (s.id.clone(), rules::SensorInfo { kind: Some(s.kind.clone()), district: s.district.clone(), gateway: s.gateway.clone() }))
            .collect();
        let engine = rules::Engine::new(all_rules, catalogue, alert_store.alerts().map_err(anyhow::Error::msg)?, shared::now_ms());
        let feed = feed::bus();
        let alerting = Arc::new(alerting::Alerting::new(engine, alert_store, feed.clone(), config.webhook.clone(), webhook_outbox.clone()));
        let (alerts_tx, alerts_rx) = mpsc::channel::<alerting::Input>(65_536);

        let forwarded = Arc::new(tokio::sync::Notify::new());
        let keys = config.batch_keys(base).map_err(anyhow::Error::msg)?;
        let ingest = Ingest::new(store.clone(), registry.clone(), client.clone(), alerts_tx.clone(), feed.clone(), forwarded.clone(), keys, config.mqtt.gateway_rate)?;
        let mut tasks = vec![tokio::spawn(ingest.run(rx))];
        let lifecycle_stats = Arc::new(lifecycle::LifecycleStats::default());
        if config.store.series {
            let policy = Arc::new(lifecycle::Policy::new(config.store.keep, config.store.retention.clone(), &config.sensor));
            tasks.push(tokio::spawn(lifecycle::run(store.clone(), policy, config.store.expire_every.0, lifecycle_stats.clone(), shutdown_rx.clone())));
        }
        let mut sink_stats = None;
        if let Some(influx) = &config.influxdb {
            let token = influx.token(base).map_err(anyhow::Error::msg)?;
            let sink = sink::InfluxSink::new(influx, token, &config.sensor);
            sink_stats = Some(sink.stats.clone());
            tasks.push(tokio::spawn(sink.run(store.clone(), forwarded, shutdown_rx.clone())));
        }
        tasks.push(tokio::spawn(alerting.clone().run(alerts_rx, Duration::from_millis(250), shutdown_rx.clone())));
        // The feeds get connections of their own. Live readings: a flood of
        // them must never fill the request queue that acks wait on. Alerts:
        // the broker's PUBACK for an alert, left unacknowledged on a socket
        // without TCP_NODELAY (rumqttd's), would hold the next incoming batch
        // for the delayed ACK (~40 ms).
        let feed_client = |role: &str, queue: usize| {
            let (client, mut eventloop) = client_for(&format!("-{role}"), queue);
            let (mut stop, role) = (shutdown_rx.clone(), role.to_string());
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = eventloop.poll() => if let Err(e) = r {
                            tracing::warn!("{role} feed MQTT connection: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        },
                        _ = stop.changed() => return,
                    }
                }
            });
            (client, task)
        };
        let (live_client, live_task) = feed_client("live", 4096);
        let (alert_client, alert_task) = feed_client("alerts", 1024);
        tasks.extend([live_task, alert_task]);
        tasks.push(tokio::spawn(feed::mqtt::live(feed.clone(), live_client)));
        tasks.push(tokio::spawn(feed::mqtt::alerts(feed.clone(), alert_client)));
        tasks.push(tokio::spawn(feed::webhook::run(webhook_outbox, config.webhook.clone(), shutdown_rx.clone())));
        let up_filter = match &config.mqtt.shared_group {
            Some(g) => format!("$share/{g}/{}", topics::UP_FILTER),
            None => topics::UP_FILTER.to_string(),
        };
        let links = Links { ingest: tx, alerts: alerts_tx, registry: registry.clone(), feed: feed.clone() };
        let (ready_tx, mut ready) = watch::channel(false);
        tasks.push(tokio::spawn(mqtt_loop(broker.to_string(), up_filter, client.clone(), eventloop, links, ready_tx, shutdown_rx.clone())));
        // Ready means subscribed: a batch published after `start` returns is
        // heard. An external broker that is down does not hold start-up up.
        if tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r)).await.is_err() {
            tracing::warn!("not subscribed to {broker} after 5 s; going on, batches will arrive once it is reachable");
        }

        let plain_listen = if config.http.tls.is_some() { "127.0.0.1:0" } else { config.http.listen.as_str() };
        let listener = tokio::net::TcpListener::bind(plain_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {} (http.listen)", config.http.listen))?;
        let mut http_addr = listener.local_addr()?;
        if let Some(files) = &config.http.tls {
            http_addr = front::front(&config.http.listen, Some(front::server_config(files, base)?), http_addr, "HTTP", tls_stats.clone(), None, shutdown_rx.clone()).await?;
        }
        let app = api::router(api::AppState {
            store: store.clone(),
            registry: registry.clone(),
            catalogue: Arc::new(config.sensor.clone()),
            alerting: alerting.clone(),
            feed: feed.clone(),
            started: std::time::Instant::now(),
            shutdown: shutdown_rx.clone(),
            sink: sink_stats,
            lifecycle: lifecycle_stats,
            access: auth::Access::new(config.auth.as_ref(), audit.clone()),
            tls: tls_stats.clone(),
            audit,
        });
        let mut stop = shutdown_rx.clone();
        let http = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            });
            if let Err(e) = serve.await {
                tracing::error!("HTTP server: {e}");
            }
        });
        Ok(Collector { http_addr, mqtt_url: public.to_string(), store, registry, alerting, feed, shutdown, tasks, http })
    }

    /// Stops serving (open streams end, requests in flight finish), then stops
    /// ingest and syncs the store. Once it returns, nothing holds the stores.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
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

/// Where the MQTT loop hands what it receives.
struct Links {
    ingest: mpsc::Sender<Incoming>,
    alerts: mpsc::Sender<alerting::Input>,
    registry: Arc<Registry>,
    feed: feed::Bus,
}

/// Moves packets: `up` to ingest (bounded, so a flood slows the broker
/// connection rather than growing memory), `state` and `health` to the
/// registry, the alert engine and the feeds.
async fn mqtt_loop(
    broker: String,
    up_filter: String,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    links: Links,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Links { ingest, alerts, registry, feed } = links;
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shutdown.changed() => { let _ = client.disconnect().await; return; }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                tracing::info!(%broker, "collector connected to broker");
                for (filter, qos) in [(up_filter.as_str(), QoS::AtLeastOnce), (topics::STATE_FILTER, QoS::AtLeastOnce), (topics::HEALTH_FILTER, QoS::AtMostOnce)] {
                    if let Err(e) = client.subscribe(filter, qos).await {
                        tracing::error!("cannot subscribe to {filter}: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                ready.send_replace(true);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(gw) = topics::gateway_of(&p.topic, "up") {
                    if ingest.send(Incoming { gateway: gw.to_string(), payload: p.payload }).await.is_err() {
                        return;
                    }
                } else if let Some(gw) = topics::gateway_of(&p.topic, "state") {
                    match serde_json::from_slice::<State>(&p.payload) {
                        Ok(s) => {
                            registry.state(gw, s.status, s.ts_ms);
                            let online = s.status == shared::wire::Status::Online;
                            let _ = alerts.try_send(alerting::Input::GatewayState { gateway: gw.to_string(), online });
                            let _ = feed.send(feed::FeedEvent::Gateway { id: gw.to_string(), status: if online { "online" } else { "offline" }, ts_ms: s.ts_ms });
                        }
                        Err(e) => tracing::warn!(topic = %p.topic, "ignoring malformed state: {e}"),
                    }
                } else if let Some(gw) = topics::gateway_of(&p.topic, "health") {
                    match serde_json::from_slice::<Health>(&p.payload) {
                        Ok(h) => {
                            registry.health(gw, h);
                            let _ = alerts.try_send(alerting::Input::GatewayHeard { gateway: gw.to_string() });
                        }
                        Err(e) => tracing::warn!(topic = %p.topic, "ignoring malformed health: {e}"),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%broker, "collector MQTT: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Logging for the binaries: `RUST_LOG` wins; otherwise info, with rumqttd's
/// error-per-disconnect noise silenced.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttd=off".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
