//! Tokens, gateway passwords and batch keys the security tests configure.

use shared::{Quality, Reading};
use support::Identity;

pub const VIEWER: &str = "viewer-token-0123456789abcdef";

pub const OPERATOR: &str = "operator-token-0123456789abcdef";

pub const ADMIN: &str = "admin-token-0123456789abcdef";

pub fn tokens() -> String {
    [("wall-screen", "viewer", VIEWER), ("duty-officer", "operator", OPERATOR), ("platform-team", "admin", ADMIN)]
        .iter()
        .map(|(name, role, token)| format!("[[auth.token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n", shared::auth::sha256_hex(token)))
        .collect()
}

pub fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    p
}

pub const PW_A: &str = "password-of-gateway-a-0123456789";

pub const PW_B: &str = "password-of-gateway-b-0123456789";

pub const KEY_A: &str = "batch-key-of-gateway-a-0123456789abcdef";

pub const KEY_B: &str = "batch-key-of-gateway-b-0123456789abcdef";

pub fn gateways_toml(dir: &std::path::Path) -> String {
    let (ka, kb) = (secret_file(dir, "a.key", KEY_A), secret_file(dir, "b.key", KEY_B));
    format!(
        "[[gateway]]\nid = \"gw-a\"\npassword_sha256 = \"{}\"\nbatch_key_file = \"{}\"\n[[gateway]]\nid = \"gw-b\"\npassword_sha256 = \"{}\"\nbatch_key_file = \"{}\"\n",
        shared::auth::sha256_hex(PW_A),
        ka.display(),
        shared::auth::sha256_hex(PW_B),
        kb.display()
    )
}

pub fn gw_a() -> Identity {
    Identity { login: Some(("gw-a".into(), PW_A.into())), key: Some(KEY_A.as_bytes().to_vec()), tls: None }
}

pub fn water(value: f64) -> Reading {
    Reading { seq: shared::Seq(0), sensor: "wl-1".into(), metric: "water_level_m".into(), ts_ms: 1_700_000_000_000 + (value * 1000.0) as i64, value, quality: Quality::Good }
}

pub fn keys_only_toml(dir: &std::path::Path) -> String {
    let (ka, kb) = (secret_file(dir, "a.key", KEY_A), secret_file(dir, "b.key", KEY_B));
    format!("[[gateway]]\nid = \"gw-a\"\nbatch_key_file = \"{}\"\n[[gateway]]\nid = \"gw-b\"\nbatch_key_file = \"{}\"\n", ka.display(), kb.display())
}
