//! `[influxdb]`: where the sink writes and how.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::config::{HumanDuration, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://influx:8086`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// The API token, read from this file (never from the config itself, never logged)…
    pub token_file: Option<PathBuf>,
    /// …or from this environment variable.
    pub token_env: Option<String>,
    /// `metric`: one measurement per metric; `kind`: one per sensor kind with a `metric` tag.
    #[serde(default)]
    pub measurement: crate::sink::lineproto::Scheme,
    /// Points per write request.
    #[serde(default = "default_batch_points")]
    pub batch_points: usize,
    /// A write that takes longer is abandoned and retried.
    #[serde(default = "default_influx_timeout")]
    pub timeout: HumanDuration,
}

fn default_batch_points() -> usize {
    5000
}

fn default_influx_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("influxdb.token_file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("influxdb.token_env: environment variable `{0}` is not set")]
    Env(String),
}

impl InfluxConfig {
    /// The token, from the file or environment variable named in the config.
    pub fn token(&self, base: &Path) -> Result<String, TokenError> {
        match (&self.token_file, &self.token_env) {
            (Some(f), _) => std::fs::read_to_string(base.join(f)).map(|t| t.trim().to_string()).map_err(|source| TokenError::File { path: base.join(f), source }),
            (None, Some(var)) => std::env::var(var).map(|t| t.trim().to_string()).map_err(|_| TokenError::Env(var.clone())),
            (None, None) => Ok(String::new()),
        }
    }

    pub fn validate(&self, base: &Path, p: &mut Vec<Problem>) {
        match self.url.parse::<axum::http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some() => {}
            _ => p.push(Problem::new("influxdb.url", format!("`{}` is not an http:// or https:// URL", self.url))),
        }
        if self.org.trim().is_empty() {
            p.push(Problem::new("influxdb.org", "must not be empty"));
        }
        if self.bucket.trim().is_empty() {
            p.push(Problem::new("influxdb.bucket", "must not be empty"));
        }
        if self.token_file.is_some() && self.token_env.is_some() {
            p.push(Problem::new("influxdb.token_env", "give `token_file` or `token_env`, not both"));
        }
        if let Some(f) = &self.token_file {
            if !base.join(f).is_file() {
                p.push(Problem::new("influxdb.token_file", format!("file `{}` does not exist", base.join(f).display())));
            }
        }
        if !(1..=100_000).contains(&self.batch_points) {
            p.push(Problem::new("influxdb.batch_points", "must be between 1 and 100000"));
        }
    }
}
