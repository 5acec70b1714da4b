//! The `citysense-agent` command line: run, check, test, probe, status, reset-outbox.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use agent::config::AgentConfig;

#[derive(Parser)]
#[command(name = "citysense-agent", version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("CITYSENSE_GIT_REV"), ")"), about = "citysense edge agent: reads Modbus and MQTT sensors, buffers durably, forwards to the collector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config: exit 0 with a summary, or exit 2 with one line per problem.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Also list, per device, the metrics and the read requests that will be made.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Poll every device of a config once (and listen to its MQTT sources) and
    /// print each reading as it would be sent, with its raw registers. Never
    /// touches the outbox. Exit 1 if any device or source failed.
    Test {
        #[arg(long)]
        config: PathBuf,
        /// How long to listen to the MQTT sources.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Read a live device once and print raw and decoded values: the commissioning tool.
    Probe {
        #[command(subcommand)]
        what: ProbeWhat,
    },
    /// Move a damaged outbox aside and start a new one after the last seq used.
    ResetOutbox {
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask the running agent for its health: uplink, buffer, per-device polls.
    Status {
        /// Read `[status] listen` from this config (default 127.0.0.1:9102).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The status address itself, instead of a config.
        #[arg(long)]
        addr: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProbeWhat {
    /// Modbus TCP: ADDR is tcp://HOST:PORT, HOST:PORT or HOST (port 502).
    Modbus {
        addr: String,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// holding | input | coil | discrete
        #[arg(long, default_value = "holding")]
        table: String,
        /// First address, 0-based (mbpoll's -r 1 is address 0), or a datasheet
        /// number such as 40101 (holding, address 100), which also sets the table.
        #[arg(long, default_value = "0")]
        start: String,
        #[arg(long, default_value_t = 10)]
        count: u16,
        /// Decode as bool u16 i16 u32 i32 u64 i64 f32 f64, in every word order.
        #[arg(long = "type")]
        data_type: Option<String>,
        /// Mark the word order you expect (ABCD CDAB BADC DCBA).
        #[arg(long)]
        order: Option<String>,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn probe(what: ProbeWhat) -> ExitCode {
    let ProbeWhat::Modbus { addr, unit, table, start, count, data_type, order, timeout } = what;
    let parsed = (|| -> Result<agent::probe::Probe, String> {
        use agent::source::modbus::{DataType, Table, WordOrder};
        let given = Table::parse(&table).map_err(|e| e.to_string())?;
        let (table, start) = match start.parse::<u16>() {
            Ok(n) if start.len() < 5 => (given, n),
            _ => match agent::config::Modicon::parse(&start) {
                Ok(m) => (m.table, m.address),
                Err(_) => match start.parse::<u16>() {
                    Ok(n) => (given, n),
                    Err(_) => return Err(format!("--start `{start}`: write a 0-based address (0..=65535) or a datasheet number such as 40101")),
                },
            },
        };
        Ok(agent::probe::Probe {
            address: agent::probe::Probe::address(&addr).map_err(|e| e.to_string())?,
            unit,
            table,
            start,
            count,
            data_type: data_type.as_deref().map(DataType::parse).transpose().map_err(|e| e.to_string())?,
            order: order.as_deref().map(WordOrder::parse).transpose().map_err(|e| e.to_string())?,
            timeout,
        })
    })();
    let p = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("citysense-agent probe: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(p.run()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("citysense-agent probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and checks a config; on failure prints every problem and gives exit code 2.
fn load(path: &std::path::Path) -> Result<AgentConfig, ExitCode> {
    shared::config::load_and_enter::<AgentConfig>(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, verbose } => match shared::config::load::<AgentConfig>(&config) {
            Ok(c) => {
                println!("{}: ok: {}", config.display(), c.summary());
                let text = std::fs::read_to_string(&config).unwrap_or_default();
                let map = shared::config::SourceMap::new(&text);
                for w in c.warnings() {
                    eprintln!("{}:{}: {}: warning: {}", config.display(), map.line_of_path(&w.path), w.path, w.message);
                }
                if verbose {
                    for line in c.plan() {
                        println!("  {line}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(d) => {
                eprintln!("{d}");
                ExitCode::from(2)
            }
        },
        Command::Probe { what } => probe(what),
        Command::Test { config, seconds } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
            let report = rt.block_on(agent::trial::run(&cfg, std::time::Duration::from_secs(seconds)));
            print!("{}", report.text);
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::ResetOutbox { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match agent::outbox::reset(&cfg.buffer.path) {
                Ok((aside, after)) => {
                    println!("moved the old outbox to {}; the new one at {} starts after seq {after}", aside.display(), cfg.buffer.path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("citysense-agent reset-outbox: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { config, addr, json } => {
            let addr = match (addr, config) {
                (Some(a), _) => a,
                (None, Some(c)) => match shared::config::load::<AgentConfig>(&c) {
                    Ok(cfg) => cfg.status.listen.text().to_string(),
                    // The file on disk may be the broken one a reload refused:
                    // the running agent is what the technician wants to see.
                    Err(d) => {
                        let addr = listen_of_broken(&c);
                        eprintln!("citysense-agent status: {} does not pass check ({} problem(s)); asking the running agent at {addr}:\n{d}", c.display(), d.0.len());
                        addr
                    }
                },
                (None, None) => agent::config::StatusConfig::default().listen.text().to_string(),
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            match rt.block_on(agent::status::fetch(&addr)) {
                Ok(r) if json => {
                    println!("{}", serde_json::to_string_pretty(&r).expect("report serializes"));
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    print!("{}", agent::status::render(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("citysense-agent status: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            // Absolute: SIGHUP re-reads it after the working directory moved to it.
            let config = config.canonicalize().unwrap_or(config);
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
            match rt.block_on(run(config, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("citysense-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs until SIGINT/SIGTERM. SIGHUP reloads the config file: a valid one
/// replaces the running agent (sources and uplink restart; the outbox is
/// flushed and reopened, so nothing buffered is lost), an invalid one is
/// reported line by line and the agent keeps running as it was.
async fn run(path: PathBuf, mut cfg: AgentConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut hup = signal(SignalKind::hangup())?;
    let mut last_reload: Option<agent::status::ReloadOutcome> = None;
    loop {
        tracing::info!("{}", cfg.summary());
        let Some(agent) = agent::Agent::start_patiently(cfg.clone(), std::time::Duration::from_secs(2), &mut stop).await? else {
            return Ok(());
        };
        println!("citysense-agent: status on http://{}", agent.status_addr);
        {
            let mut record = agent.config_record.lock().unwrap();
            record.path = Some(path.display().to_string());
            record.last_reload = last_reload.take();
        }
        let next = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break None,
                _ = hup.recv() => {
                    let problems = match shared::config::load::<AgentConfig>(&path) {
                        // The collector knows a gateway by its id: readings under a
                        // new one would be counted against an unknown gateway.
                        Ok(new) if new.gateway != cfg.gateway => vec![format!(
                            "{}: gateway: changed from `{}` to `{}`: a gateway's id cannot change by reload; stop the agent, register the new id with the collector, and start it again",
                            path.display(), cfg.gateway, new.gateway
                        )],
                        Ok(new) => break Some(new),
                        Err(d) => d.0.iter().map(|l| l.to_string()).collect(),
                    };
                    for line in &problems {
                        tracing::error!("reload refused, keeping the running config: {line}");
                    }
                    agent.reload_refused(problems);
                }
            }
        };
        tracing::info!("stopping: flushing the outbox");
        agent.shutdown().await;
        match next {
            Some(new) => {
                tracing::info!("reloading {}", path.display());
                cfg = new;
                last_reload = Some(agent::status::ReloadOutcome { at_ms: shared::now_ms(), accepted: true, problems: Vec::new() });
            }
            None => return Ok(()),
        }
    }
}

/// `[status] listen` of a config that does not pass `check`, read from the
/// TOML alone (the default when even that is missing or unreadable).
fn listen_of_broken(path: &std::path::Path) -> String {
    let default = || agent::config::StatusConfig::default().listen.text().to_string();
    let Ok(text) = std::fs::read_to_string(path) else { return default() };
    let Ok(value) = text.parse::<toml::Table>() else { return default() };
    value.get("status").and_then(|s| s.get("listen")).and_then(|l| l.as_str()).map(str::to_string).unwrap_or_else(default)
}

/// tokio's scheduler averages task poll times with `f64::powf`, the only
/// function the agent would take from glibc's libm. Loading libm costs every
/// agent ~0.5 MiB of resident memory (its relocations and IFUNC resolvers
/// touch most of its pages at start); this definition (musl's algorithm,
/// from the `libm` crate) takes its place at link time, and the linker then
/// leaves libm out of the binary's needed libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
