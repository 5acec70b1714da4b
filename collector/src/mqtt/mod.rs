//! The MQTT side of the collector: the embedded broker (`broker`), the
//! grants (`acl`) and the front door that enforces them (`front`, relayed
//! through the TLS front in `crate::tls`), the settings (`settings`), the one
//! supervised client every component connects through (`client`), and the
//! routing of what arrives (`inbound`).

pub mod acl;
pub mod broker;
pub mod client;
pub mod front;
pub mod inbound;
pub mod settings;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use shared::url::BrokerUrl;
use tokio::sync::watch;

use crate::tls::{self, TlsStats};
use settings::MqttConfig;

/// The MQTT user this collector's own connections use when the broker checks passwords.
pub const INTERNAL_USER: &str = "citysense-collector";

/// Where the broker is, seen from the collector and from the agents.
pub struct Endpoints {
    /// Where this collector's own connections go (the embedded broker's inner
    /// listener, or the external broker).
    pub inner: BrokerUrl,
    /// The other nodes of an external broker cluster (`mqtt.external` as a
    /// list): a connection that loses `inner` moves on to them.
    pub failover: Vec<BrokerUrl>,
    /// What agents are told to connect to.
    pub public: BrokerUrl,
    /// This collector's own login, when the broker checks passwords.
    pub login: Option<(String, String)>,
    /// How an external broker reached over TLS (`mqtts://`) is checked.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.external: {0}")]
    External(#[from] shared::url::UrlError),
    #[error("mqtt.listen is not IP:PORT")]
    Listen,
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("embedded MQTT broker did not start listening on {0}")]
    NotListening(std::net::SocketAddr),
    #[error("reading mqtt.password_file {path}: {source}")]
    PasswordFile { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("mqtt.ca_file / cert_file / key_file (TLS to mqtt.external): {0}")]
    ClientTls(tls::TlsError),
    #[error("{0}")]
    Secret(String),
}

/// Who may use the embedded broker: password hashes by user, and each user's topic grant.
pub struct Admission {
    /// None leaves the broker open (loopback only, which `check` enforces).
    pub users: Option<HashMap<String, String>>,
    pub grants: acl::Acl,
    /// The front's refusals, for `/metrics`.
    pub stats: Arc<front::FrontStats>,
}

/// Starts the embedded broker (behind the front door and the TLS front when
/// configured) or settles on the external one.
pub async fn start(config: &MqttConfig, admission: Admission, stats: Arc<TlsStats>, shutdown: watch::Receiver<bool>) -> Result<Endpoints, MqttError> {
    let max_packet = config.max_packet.0 as usize;
    let Admission { users, grants, stats: front_stats } = admission;
    // With users, the broker behind the front admits only logins made for
    // this run: the front's (after it checked the real password) and this
    // collector's own. Whoever reaches its loopback port directly has neither.
    let inner = users.as_ref().map(|_| shared::auth::random_secret().map(|s| Arc::new(front::InnerLogins::new(s)))).transpose().map_err(|e| MqttError::Secret(e.to_string()))?;
    let mut failover = Vec::new();
    let (broker_url, public) = match (&config.external, config.listen_addr()) {
        (Some(urls), _) => {
            let mut urls = urls.iter().map(|u| BrokerUrl::parse(u));
            let u = urls.next().ok_or(MqttError::Listen)??;
            failover = urls.collect::<Result<_, _>>()?;
            (u.clone(), u)
        }
        (None, Some(listen)) => match (users, &inner) {
            (None, _) if config.tls.is_none() => {
                // Open: the demo's loopback broker, reached directly.
                let addr = broker::start_embedded_async(listen, max_packet, None).await?;
                let u = BrokerUrl { tls: false, host: addr.ip().to_string(), port: addr.port() };
                (u.clone(), u)
            }
            (users, inner) => {
                let inner_users = inner.as_ref().map(|i| {
                    let names = users.iter().flat_map(|u| u.keys().cloned()).chain([INTERNAL_USER.to_string()]);
                    Arc::new(names.map(|u| (u.clone(), shared::auth::sha256_hex(&i.password(&u)))).collect::<HashMap<_, _>>())
                });
                let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                let addr = broker::start_embedded_async(loopback, max_packet, inner_users).await?;
                let tls = config.tls.as_ref().map(|f| tls::server_config(f, Path::new(""))).transpose()?;
                let is_tls = tls.is_some();
                let listen = listen.to_string();
                let public = match (users, inner) {
                    (Some(users), Some(inner)) => {
                        let relay = front::GrantRelay { acl: Arc::new(grants), users: Arc::new(users), inner: inner.clone(), max_packet, stats: front_stats };
                        tls::front(&listen, tls, addr, "MQTT", stats, relay, None, shutdown).await?
                    }
                    // TLS without users: loopback only (`check` enforces it), so the front only terminates TLS.
                    _ => tls::front(&listen, tls, addr, "MQTT", stats, tls::Plain, None, shutdown).await?,
                };
                (BrokerUrl { tls: false, host: addr.ip().to_string(), port: addr.port() }, BrokerUrl { tls: is_tls, host: public.ip().to_string(), port: public.port() })
            }
        },
        (None, None) => return Err(MqttError::Listen),
    };
    let password = match (&config.password_file, &inner) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|source| MqttError::PasswordFile { path: f.clone(), source })?.trim().to_string(),
        (None, Some(i)) => i.password(INTERNAL_USER),
        (None, None) => String::new(),
    };
    let login = config.username.clone().or(inner.as_ref().map(|_| INTERNAL_USER.to_string())).map(|u| (u, password));
    // Only an external broker's address is mqtts:// here (`check` refuses a list that mixes).
    let tls = match broker_url.tls {
        true => Some(tls::client_config(config.ca_file.as_deref(), config.cert_file.as_deref().zip(config.key_file.as_deref())).map_err(MqttError::ClientTls)?),
        false => None,
    };
    Ok(Endpoints { inner: broker_url, failover, public, login, tls })
}
