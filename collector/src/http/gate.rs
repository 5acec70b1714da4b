//! What a request must be before any role is even considered: a write is
//! JSON (a cross-site form or `text/plain` fetch cannot send that without a
//! CORS preflight, which this API never grants) from this collector's own
//! origin or an allowed one; an open API answers only to loopback host names
//! (DNS rebinding). Refusals are counted by reason for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};

use super::settings::HttpConfig;

/// Why a request was refused, as `citysense_http_refused_total{reason=…}` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized,
    Forbidden,
    ContentType,
    Origin,
    Host,
    TooLarge,
    ConnectionCap,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [Refusal::Unauthorized, Refusal::Forbidden, Refusal::ContentType, Refusal::Origin, Refusal::Host, Refusal::TooLarge, Refusal::ConnectionCap];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
            Refusal::ContentType => "content_type",
            Refusal::Origin => "origin",
            Refusal::Host => "host",
            Refusal::TooLarge => "too_large",
            Refusal::ConnectionCap => "connection_cap",
        }
    }
}

#[derive(Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    pub fn add(&self, r: Refusal) {
        self.counts[r as usize].fetch_add(1, Relaxed);
    }

    pub fn count(&self, r: Refusal) -> u64 {
        self.counts[r as usize].load(Relaxed)
    }
}

/// The origins and host names requests are checked against.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
}

impl Origins {
    pub fn new(c: &HttpConfig) -> Origins {
        Origins { allowed_origins: c.allowed_origins.clone(), allowed_hosts: c.allowed_hosts.clone() }
    }

    /// Loopback literals, `localhost` and the configured names.
    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Ok, or the refusal with its status and message.
    pub fn check(&self, req: &Request, open: bool) -> Result<(), (Refusal, StatusCode, String)> {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if open && !self.host_allowed(host) {
            return Err((
                Refusal::Host,
                StatusCode::FORBIDDEN,
                format!("Host `{host}` is not this collector's: an open API answers only to loopback names and http.allowed_hosts"),
            ));
        }
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return Ok(());
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let same = origin.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
            if !same && !self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Err((
                    Refusal::Origin,
                    StatusCode::FORBIDDEN,
                    format!("Origin `{origin}` may not write here: only pages of this collector ({host}) and http.allowed_origins may"),
                ));
            }
        }
        if req.method() == Method::POST {
            let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let essence = ctype.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err((Refusal::ContentType, StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("writes take Content-Type: application/json, not `{ctype}`")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, host: &str, origin: Option<&str>, ctype: Option<&str>) -> Request {
        let mut b = Request::builder().method(method).uri("/api/v1/rules").header("host", host);
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        if let Some(c) = ctype {
            b = b.header("content-type", c);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn writes_need_json_from_this_origin_and_an_open_api_a_loopback_host() {
        let o = Origins { allowed_origins: vec!["https://ops.example".into()], allowed_hosts: vec!["collector.lan".into()] };
        let json = Some("application/json; charset=utf-8");
        assert!(o.check(&req("POST", "127.0.0.1:8080", Some("http://127.0.0.1:8080"), json), true).is_ok());
        assert!(o.check(&req("POST", "127.0.0.1:8080", None, json), true).is_ok(), "curl sends no Origin");
        assert!(o.check(&req("POST", "[::1]:8080", Some("https://ops.example"), json), true).is_ok());
        assert!(o.check(&req("GET", "collector.lan", None, None), true).is_ok());
        assert_eq!(o.check(&req("POST", "127.0.0.1:8080", Some("http://evil.example"), json), true).unwrap_err().0, Refusal::Origin);
        assert_eq!(o.check(&req("POST", "127.0.0.1:8080", Some("null"), json), true).unwrap_err().0, Refusal::Origin);
        assert_eq!(o.check(&req("POST", "127.0.0.1:8080", None, Some("text/plain")), true).unwrap_err().0, Refusal::ContentType);
        assert_eq!(o.check(&req("POST", "127.0.0.1:8080", None, None), true).unwrap_err().0, Refusal::ContentType);
        assert_eq!(o.check(&req("GET", "evil.example:8080", None, None), true).unwrap_err().0, Refusal::Host);
        assert!(o.check(&req("GET", "evil.example:8080", None, None), false).is_ok(), "with tokens a rebinding page has no token");
    }
}
