//! Debian's Chromium, headless, driven over WebDriver (chromedriver).

use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use support::{free_port, wait_for, wait_for_port, Child};

/// The chromedriver, and on drop the Chromium it started: a test that panics
/// before closing its session would otherwise leave Chromium running (it
/// outlives its driver), so it is found by its profile directory and killed.
pub struct Driver {
    _driver: Child,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-f", "--"]).arg(format!("--user-data-dir={}", self.profile.display())).status();
    }
}

/// A chromedriver and a Chromium session with its profile in `profile`. The
/// flags keep Chromium off the network it would otherwise call at start.
pub async fn browser(profile: &std::path::Path) -> (Driver, Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): run ./tests/run, which installs chromium and chromium-driver"));
    let driver = Child(driver);
    wait_for_port(port, "chromedriver").await;
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-quic", "--no-first-run", "--window-size=1920,1080", format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (Driver { _driver: driver, profile: profile.to_path_buf() }, client)
}

/// Polls a JavaScript expression in the page until it is truthy (30 s at most).
pub async fn until(page: &Client, what: &str, js: &str) -> Value {
    wait_for(what, Duration::from_secs(30), || async move {
        let v = page.execute(&format!("return ({js});"), vec![]).await.unwrap();
        (!(v.is_null() || v == false || v == 0 || v == "")).then_some(v)
    })
    .await
}
