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
}
