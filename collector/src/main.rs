//! The `citysense-collector` command line: run, check, token, gateway-credentials.

/// jemalloc rather than glibc's malloc: BENCHMARKS.md "allocator" (as
/// Vector and TiKV ship).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use collector::config::CollectorConfig;
use collector::Collector;

#[derive(Parser)]
#[command(name = "citysense-collector", version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("CITYSENSE_GIT_REV"), ")"), about = "citysense collector: the city brain's ingest, store and API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config: exit 0 with a summary, or exit 2 with one line per problem.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Make an API token: prints it once, and the `[[auth.token]]` entry holding only its hash.
    Token {
        /// Who or what holds it, as the audit log will name it.
        #[arg(long)]
        name: String,
        /// viewer, operator, command or admin.
        #[arg(long)]
        role: String,
        /// The [[department]] an operator acts for (its incidents only).
        #[arg(long)]
        department: Option<String>,
    },
    /// Make a gateway's MQTT password and batch key: writes ID.password and
    /// ID.key (mode 0600) into --out and prints the collector's and the agent's config lines.
    GatewayCredentials {
        #[arg(long)]
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// The demo is its own binary, `citysense-demo`: this only says so.
    #[command(hide = true, disable_help_flag = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        _args: Vec<String>,
    },
}

fn load(path: &std::path::Path) -> Result<CollectorConfig, ExitCode> {
    shared::config::load_and_enter::<CollectorConfig>(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                println!("{}: ok: {}", config.display(), c.summary());
                for line in c.retention_summary() {
                    println!("{}: {line}", config.display());
                }
                println!("{}: {}", config.display(), c.ingest.clock.summary());
                println!("{}: {}", config.display(), c.incidents.summary(&c.department));
                println!("{}: ownership: a catalogued sensor's readings are accepted only from its [[sensor]] gateway/gateways; any other sensor is bound to the first gateway heard (PUT /api/v1/sensors/{{id}}/gateway moves it)", config.display());
                let text = std::fs::read_to_string(&config).unwrap_or_default();
                let map = shared::config::SourceMap::new(&text);
                for w in c.warnings() {
                    eprintln!("{}:{}: {}: warning: {}", config.display(), map.line_of_path(&w.path), w.path, w.message);
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            collector::init_tracing();
            finish(rt().block_on(async {
                let c = Collector::start(cfg).await?;
                println!("citysense-collector: mqtt on {}", c.mqtt_url);
                println!("citysense-collector: http on http://{}", c.http_addr);
                collector::wait_for_signal().await;
                c.shutdown().await;
                Ok(())
            }))
        }
        Command::Token { name, role, department } => {
            let Ok(role) = serde_json::from_value::<collector::http::auth::Role>(serde_json::Value::String(role.clone())) else {
                eprintln!("citysense-collector token: role `{role}` is not viewer, operator, command or admin");
                return ExitCode::from(2);
            };
            let token = match shared::auth::random_secret() {
                Ok(t) => t,
                Err(e) => return finish(Err(e.into())),
            };
            println!("# token for {name}, shown only now (send it as Authorization: Bearer TOKEN):\n# {token}");
            println!("[[auth.token]]\nname = \"{name}\"\nrole = \"{}\"\nsha256 = \"{}\"", role.as_str(), shared::auth::sha256_hex(&token));
            if let Some(d) = department {
                println!("department = \"{d}\"");
            }
            ExitCode::SUCCESS
        }
        Command::GatewayCredentials { id, out } => finish(gateway_credentials(&id, &out)),
        Command::Demo { .. } => {
            // The demo links the agent and the simulator, which the production
            // collector must not carry.
            eprintln!("citysense-collector: the demo is its own binary now: cargo run --release -p citysense-demo (same flags)");
            ExitCode::from(2)
        }
    }
}

fn gateway_credentials(id: &str, out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !shared::topics::valid_id(id) {
        anyhow::bail!("`{id}` is not a valid gateway id");
    }
    std::fs::create_dir_all(out)?;
    let (password, key) = (shared::auth::random_secret()?, shared::auth::random_secret()?);
    for (ext, value) in [("password", &password), ("key", &key)] {
        let path = out.join(format!("{id}.{ext}"));
        // create_new: never overwrite a gateway's live credentials by accident.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        writeln!(f, "{value}")?;
    }
    let dir = out.canonicalize()?;
    println!("# collector config (copy {id}.key to the collector; {id}.password is not needed there):");
    println!("[[gateway]]\nid = \"{id}\"\npassword_sha256 = \"{}\"\nbatch_key_file = \"{}\"\n", shared::auth::sha256_hex(&password), dir.join(format!("{id}.key")).display());
    println!("# agent config on {id} (copy both files to the gateway, mode 0600):");
    println!("gateway = \"{id}\"\n[uplink]\nusername = \"{id}\"\npassword_file = \"/etc/citysense/{id}.password\"\nbatch_key_file = \"/etc/citysense/{id}.key\"");
    Ok(())
}

fn finish(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citysense-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
