//! Build script shared by the agent and collector binaries: records the git
//! revision for `--version`, so a gateway in the field says exactly what it runs.
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
    let git = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git");
    // Only paths that exist: cargo treats a missing one as always changed and
    // would rebuild both binaries on every build.
    for f in ["HEAD", "refs/heads", "packed-refs"].map(|f| git.join(f)).into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
}
