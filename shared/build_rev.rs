//! Build script shared by the agent and collector binaries: records the git
//! revision for `--version`, so a gateway in the field says exactly what it
//! runs, and the time of that revision, before which no clock reading of the
//! running agent can be right (status `clock.synced`).

/// When neither git nor `SOURCE_DATE_EPOCH` says (a source tarball): 2026-11-01.
const FALLBACK_BUILD_S: i64 = 1_793_491_200;

fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).output().ok().is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    println!("cargo:rustc-env=CITYSENSE_GIT_REV={rev}{}", if dirty { "-dirty" } else { "" });
    // The commit's time, not the wall clock at build: the same source builds
    // the same binary.
    let commit_s = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<i64>().ok());
    let source_date = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<i64>().ok());
    println!("cargo:rustc-env=CITYSENSE_BUILD_EPOCH_S={}", commit_s.or(source_date).unwrap_or(FALLBACK_BUILD_S));
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let git = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git");
    // Only paths that exist: cargo treats a missing one as always changed and
    // would rebuild both binaries on every build.
    for f in ["HEAD", "refs/heads", "packed-refs"].map(|f| git.join(f)).into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    startup_order();
}

/// A package may list the functions its binary runs while starting and
/// idling (`startup-order.txt`, written by its `startup-order.sh`): the
/// linker then places them together, so start-up faults in a few contiguous
/// pages of code instead of pieces all over the text, which stay resident.
/// The names are the symbols of one build; after a dependency or profile
/// change the file goes stale, the layout falls back towards the default
/// and nothing else changes. Only lld takes the option: Rust's default
/// linker on x86_64-unknown-linux-gnu since 1.90, unless the build names
/// another (`CITYSENSE_NO_STARTUP_ORDER` leaves it out in any case).
fn startup_order() {
    println!("cargo:rerun-if-env-changed=CITYSENSE_NO_STARTUP_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("startup-order.txt");
    if order.exists() {
        println!("cargo:rerun-if-changed={}", order.display());
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = std::process::Command::new(rustc).arg("-V").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).split('.').nth(1)?.parse::<u32>().ok());
    let other_linker = std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("linker")) || std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    let lld = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu") && minor.is_some_and(|m| m >= 90) && !other_linker;
    if order.exists() && lld && std::env::var_os("CITYSENSE_NO_STARTUP_ORDER").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
