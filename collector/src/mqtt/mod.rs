//! The MQTT side of the collector: the embedded broker (`broker`), the grant
//! front that keeps each gateway to its own topics (`acl`, relayed through
//! the TLS front in `crate::tls`), the settings (`settings`), the one
//! supervised client every component connects through (`client`), and the
//! routing of what arrives (`inbound`).

pub mod acl;
pub mod broker;
pub mod client;
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
    /// What agents are told to connect to.
    pub public: BrokerUrl,
    /// This collector's own login, when the broker checks passwords.
    pub login: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.external: {0}")]
    External(String),
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
    #[error("{0}")]
    Secret(String),
}

/// Who may use the embedded broker: password hashes by user, and each user's topic grant.
pub struct Admission {
    /// None leaves the broker open (loopback only, which `check` enforces).
    pub users: Option<HashMap<String, String>>,
    pub grants: acl::Acl,
}

/// Starts the embedded broker (behind the grant and TLS fronts when
/// configured) or settles on the external one.
pub async fn start(config: &MqttConfig, admission: Admission, stats: Arc<TlsStats>, shutdown: watch::Receiver<bool>) -> Result<Endpoints, MqttError> {
    let max_packet = config.max_packet.0 as usize;
    // With users, the broker admits only them, and this collector's own
    // connections use a password made for this run.
    let Admission { mut users, grants } = admission;
    let internal_password = users.as_ref().map(|_| shared::auth::random_secret()).transpose().map_err(|e| MqttError::Secret(e.to_string()))?;
    if let (Some(u), Some(p)) = (users.as_mut(), &internal_password) {
        u.insert(INTERNAL_USER.to_string(), shared::auth::sha256_hex(p));
    }
    let (inner, public) = match (&config.external, config.listen_addr()) {
        (Some(url), _) => {
            let u = BrokerUrl::parse(url).map_err(MqttError::External)?;
            (u.clone(), u)
        }
        (None, Some(listen)) => {
            // With users, clients reach the broker only through a front that
            // enforces their topic grants; with TLS, through one that also
            // terminates TLS. Otherwise they reach it directly.
            let grants = users.as_ref().map(|_| acl::GrantRelay { acl: Arc::new(grants), max_packet });
            let users = users.map(Arc::new);
            if grants.is_none() && config.tls.is_none() {
                let addr = broker::start_embedded_async(listen, max_packet, users).await?;
                let u = BrokerUrl { tls: false, host: addr.ip().to_string(), port: addr.port() };
                (u.clone(), u)
            } else {
                let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                let addr = broker::start_embedded_async(loopback, max_packet, users).await?;
                let tls = config.tls.as_ref().map(|f| tls::server_config(f, Path::new(""))).transpose()?;
                let is_tls = tls.is_some();
                let listen = listen.to_string();
                let public = match grants {
                    Some(g) => tls::front(&listen, tls, addr, "MQTT", stats, g, shutdown).await?,
                    None => tls::front(&listen, tls, addr, "MQTT", stats, tls::Plain, shutdown).await?,
                };
                (BrokerUrl { tls: false, host: addr.ip().to_string(), port: addr.port() }, BrokerUrl { tls: is_tls, host: public.ip().to_string(), port: public.port() })
            }
        }
        (None, None) => return Err(MqttError::Listen),
    };
    let password = match (&config.password_file, &internal_password) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|source| MqttError::PasswordFile { path: f.clone(), source })?.trim().to_string(),
        (None, Some(p)) => p.clone(),
        (None, None) => String::new(),
    };
    let user = config.username.clone().or(internal_password.as_ref().map(|_| INTERNAL_USER.to_string()));
    Ok(Endpoints { inner, public, login: user.map(|u| (u, password)) })
}
