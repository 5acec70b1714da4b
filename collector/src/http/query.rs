//! Query parameters: each route names its own in a struct that refuses any
//! other (`Params`), and times and steps parse one way everywhere.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{bad, ApiError};

/// A route's query parameters; an unknown or malformed one answers 400
/// naming it and the parameters the route takes.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(t)) => Ok(Params(t)),
            Err(e) => {
                let text = e.body_text();
                Err(bad(text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text).to_string()))
            }
        }
    }
}

/// `from`/`to`: epoch ms, RFC 3339, or relative to now like `-1h`, `-15m`.
pub fn parse_time(name: &str, s: &str, now: i64) -> Result<i64, ApiError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        if let Ok(d) = humantime::parse_duration(rel) {
            return Ok(now - d.as_millis() as i64);
        }
    }
    if s == "now" {
        return Ok(now);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| bad(format!("`{name}={s}` is not epoch ms, RFC 3339 (2026-11-23T08:00:00Z) or relative (-1h)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time("from", "1700000000000", now).ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("from", "2023-11-14T22:13:20Z", now).ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("from", "-1h", now).ok(), Some(now - 3_600_000));
        assert!(parse_time("from", "yesterday", now).is_err());
    }
}
