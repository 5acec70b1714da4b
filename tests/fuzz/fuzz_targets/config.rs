//! The agent's and the collector's TOML config files: parse, validate, and
//! place every problem on its FILE:LINE. None of it may panic.
#![no_main]

use std::path::Path;

use agent::config::AgentConfig;
use collector::config::CollectorConfig;
use libfuzzer_sys::fuzz_target;
use shared::config::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let base = Path::new("/nonexistent");
    match parse::<AgentConfig>("fuzz.toml", text, base) {
        // What `check` and `check --verbose` print for a good config.
        Ok(cfg) => {
            let _ = (cfg.summary(), cfg.plan());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match parse::<CollectorConfig>("fuzz.toml", text, base) {
        Ok(cfg) => {
            let _ = (cfg.summary(), cfg.retention_summary());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
