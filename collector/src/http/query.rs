//! Query parameters: each route names its own in a struct that refuses any
//! other (`Params`), and times and steps parse one way everywhere.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{bad, ApiError};

/// For routes that take no parameters: any one is refused, not ignored.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

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

/// Times a query may name: 1970 to the end of year 9999 (ms). Nothing is
/// stored outside it, and inside it every sum of a time and a step fits an i64.
pub const TIME_RANGE: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999;
/// The largest `step`: 100 years.
pub const MAX_STEP_MS: i64 = 100 * 366 * 86_400_000;

/// `from`/`to`: epoch ms, RFC 3339, or relative to now like `-1h`, `-15m`;
/// a 400 naming the parameter for anything else or outside `TIME_RANGE`.
pub fn parse_time(name: &str, s: &str, now: i64) -> Result<i64, ApiError> {
    let s = s.trim();
    let ms = if let Ok(ms) = s.parse::<i64>() {
        Some(ms)
    } else if s == "now" {
        Some(now)
    } else if let Some(d) = s.strip_prefix('-').and_then(|rel| humantime::parse_duration(rel).ok()) {
        Some(i64::try_from(d.as_millis()).ok().and_then(|d| now.checked_sub(d)).unwrap_or(i64::MIN))
    } else {
        humantime::parse_rfc3339_weak(s).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let ms = ms.ok_or_else(|| bad(format!("`{name}={s}` is not epoch ms, RFC 3339 (2026-11-23T08:00:00Z) or relative (-1h)")))?;
    if !TIME_RANGE.contains(&ms) {
        return Err(bad(format!("`{name}={s}` is outside 1970-01-01 to 9999-12-31")));
    }
    Ok(ms)
}

/// `step`: a duration (`10s`, `1m`) or ms, from 1 ms to `MAX_STEP_MS`.
pub fn parse_step(s: &str) -> Result<i64, ApiError> {
    let ms = match s.trim().parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => humantime::parse_duration(s.trim())
            .ok()
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .ok_or_else(|| bad(format!("`step={s}` is not a duration (10s, 1m) or ms")))?,
    };
    if !(1..=MAX_STEP_MS).contains(&ms) {
        return Err(bad(format!("`step={s}` must be between 1 ms and 100 years")));
    }
    Ok(ms)
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

    #[test]
    fn extreme_times_and_steps_are_refused_naming_the_parameter() {
        let now = 1_700_000_000_000;
        for (name, s) in [("from", "-9223372036854775808"), ("to", "9223372036854775807"), ("from", "-1"), ("to", "-300000000y"), ("from", "99999-01-01T00:00:00Z")] {
            let e = parse_time(name, s, now).unwrap_err();
            assert!(e.1.contains(&format!("`{name}=")), "{s}: {}", e.1);
        }
        assert!(parse_time("from", "-584542046091y", i64::MIN).is_err());
        for s in ["0", "-5", "9223372036854775807", "1000000y", "abc"] {
            assert!(parse_step(s).unwrap_err().1.contains("`step="), "{s}");
        }
        assert_eq!(parse_step("1m").unwrap(), 60_000);
    }
}
