//! The HTTP listener: hyper's HTTP/1 server with a header-read timeout that
//! also closes idle keep-alive connections, inside the connection caps, plus
//! the headers every answer carries (CSP, frame-ancestors, nosniff, and HSTS
//! under TLS). axum's own `serve` has no timeouts and no caps.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::gate::{Refusal, Refusals};
use crate::conn_limit::ConnLimit;

/// The dashboard loads only its own files and talks only to its own origin;
/// no page may frame it (Ack and Resolve cannot be clickjacked).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'";

/// Adds the security headers to every answer.
pub async fn security_headers(tls: bool, req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    r
}

/// Serves `app` on `listener` until `stop`: each connection within `limit`
/// (None when the TLS front in front of it applies the caps), its request
/// headers within `header_timeout`, idle no longer than that either.
pub async fn run(listener: TcpListener, app: Router, header_timeout: Duration, limit: Option<Arc<ConnLimit>>, refusals: Arc<Refusals>, mut stop: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    while let Some((tcp, _peer, slot)) = crate::conn_limit::accept(&listener, limit.as_ref(), "HTTP", &mut stop, || refusals.add(Refusal::ConnectionCap)).await {
        let (app, mut stop) = (app.clone(), stop.clone());
        conns.spawn(async move {
            let _slot = slot;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Finished connections are reaped as we go, so the set stays small.
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}
