//! Cross-site requests as a real browser sends them: a page served from
//! another origin, opened in the operator's Chromium, tries to write to an
//! open-mode collector on loopback (no token: the collector trusts loopback).
//!
//! The attack works without the gate: with `gate::Origins::check` made to
//! pass every POST (tried once, by hand), this test fails with the page's
//! text/plain POST having created rule `csrf-plain`, as the issue reported
//! (the rules API parses the body whatever its Content-Type). With the gate,
//! the browser still delivers the request (the collector counts and audits
//! the refusal) and nothing of it takes effect.

mod common;

use std::time::Duration;

use common::browser::browser;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);

/// The attacker's page: a "simple" request (text/plain, no preflight, the
/// response opaque to the page) and a JSON one (needs a CORS preflight).
fn evil_page(target: std::net::SocketAddr) -> String {
    format!(
        r#"<!doctype html><title>cat pictures</title><script>
const target = 'http://{target}/api/v1/rules';
const rule = (id) => JSON.stringify({{ id, kind: 'threshold', metric: 'water_level_m', op: '>', value: 0, severity: 'info' }});
window.results = {{}};
fetch(target, {{ method: 'POST', mode: 'no-cors', headers: {{ 'Content-Type': 'text/plain' }}, body: rule('csrf-plain') }})
  .then(() => results.plain = 'sent', (e) => results.plain = 'error: ' + e);
fetch(target, {{ method: 'POST', headers: {{ 'Content-Type': 'application/json' }}, body: rule('csrf-json') }})
  .then((r) => results.json = 'status ' + r.status, (e) => results.json = 'blocked: ' + e);
</script>"#
    )
}

/// Serves `page` to every request on a loopback port of its own: another
/// origin than the collector's.
async fn serve(page: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", page.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(page.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_cannot_write_to_an_open_collector() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[mqtt]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n", dir.path().join("store").display());
    let cfg: collector::config::CollectorConfig = shared::config::parse("open collector", &text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let c = collector::Collector::start(cfg).await.unwrap();
    let http = c.http_addr;
    let evil = serve(evil_page(http)).await;
    let (_driver, page) = browser(&dir.path().join("profile")).await;
    page.goto(&format!("http://{evil}/")).await.unwrap();

    let results = wait_for("both requests settled in the page", LIMIT, || {
        let page = page.clone();
        async move {
            let r = page.execute("return window.results;", vec![]).await.ok()?;
            (r["plain"].is_string() && r["json"].is_string()).then_some(r)
        }
    })
    .await;
    // The simple request left the browser and was answered (its response is
    // opaque to the page); the JSON one needs a preflight that grants
    // nothing, so the browser never sends it.
    assert_eq!(results["plain"], "sent", "{results}");
    assert!(results["json"].as_str().unwrap().starts_with("blocked"), "{results}");
    let (_, rules) = get(http, "/api/v1/rules").await;
    assert!(!rules.contains("csrf"), "a cross-site write created a rule: {rules}");
    // It reached the collector, which refused it for the page's Origin
    // (checked before the Content-Type, which would refuse it too) ...
    let (_, m) = get(http, "/metrics").await;
    let refused: Vec<&str> = m.lines().filter(|l| l.starts_with("citysense_http_refused_total{") && !l.ends_with(" 0")).collect();
    assert_eq!(refused, vec!["citysense_http_refused_total{reason=\"origin\"} 1"]);
    // ... and audited it; nothing else was written.
    let audit: Vec<Value> = serde_json::from_str(&get(http, "/api/v1/audit").await.1).unwrap();
    let seen: Vec<(&str, &str, u64)> = audit.iter().map(|e| (e["method"].as_str().unwrap(), e["path"].as_str().unwrap(), e["status"].as_u64().unwrap())).collect();
    assert_eq!(seen, vec![("POST", "/api/v1/rules", 403)]);
    page.close().await.unwrap();
    c.shutdown().await;
}
