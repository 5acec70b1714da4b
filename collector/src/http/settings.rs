//! `[http]`: where the API and dashboard listen, and their TLS.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use shared::config::Problem;

use crate::tls::TlsFiles;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// HTTPS for the API and dashboard.
    pub tls: Option<TlsFiles>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_http_listen(), tls: None }
    }
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
    }
}
