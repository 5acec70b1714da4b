//! `[http]`: where the API and dashboard listen, and their TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use shared::config::{HumanDuration, Problem};

use crate::tls::TlsFiles;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// HTTPS for the API and dashboard.
    pub tls: Option<TlsFiles>,
    /// A request's headers must arrive within this, and an idle keep-alive
    /// connection is closed after it: a slow or silent client holds no slot.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// Connections open at once, from everyone.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Other origins (e.g. `https://ops.city.example`) whose pages may send writes;
    /// by default only pages served by this collector may.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names an open (token-less) API answers to besides loopback
    /// addresses and `localhost`: a page on another name resolving to this
    /// host (DNS rebinding) gets 403.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            tls: None,
            header_timeout: default_header_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

fn default_header_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_connections_per_peer() -> usize {
    64
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}

impl HttpConfig {
    pub fn validate(&self, base: &Path, p: &mut Vec<Problem>) {
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(Problem::new("http.listen", format!("`{}` is not IP:PORT", self.listen)));
        }
        if let Some(t) = &self.tls {
            t.validate("http.tls", base, p);
        }
        if self.header_timeout.0 < Duration::from_millis(100) || self.header_timeout.0 > Duration::from_secs(600) {
            p.push(Problem::new("http.header_timeout", "must be between 100ms and 10m"));
        }
        if self.max_connections == 0 || self.max_connections_per_peer == 0 || self.max_connections_per_peer > self.max_connections {
            p.push(Problem::new("http.max_connections_per_peer", "both caps must be at least 1, and the cap per peer at most http.max_connections"));
        }
        for (i, o) in self.allowed_origins.iter().enumerate() {
            let ok = (o.starts_with("http://") || o.starts_with("https://")) && !o.trim_start_matches("https://").trim_start_matches("http://").contains('/');
            if !ok {
                p.push(Problem::new(format!("http.allowed_origins[{i}]"), format!("`{o}` is not an origin like `https://ops.city.example` (scheme and host, no path)")));
            }
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if h.is_empty() || h.contains(['/', ' ']) {
                p.push(Problem::new(format!("http.allowed_hosts[{i}]"), format!("`{h}` is not a host name")));
            }
        }
    }
}
