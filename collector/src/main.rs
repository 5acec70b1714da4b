//! The `citysense-collector` command line: run, check, demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use collector::config::CollectorConfig;
use collector::demo::{Demo, DemoOptions};
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
    /// Collector, simulated city and agents in one process; dashboard on http://127.0.0.1:8080.
    Demo {
        /// Extra settings layered over the demo's own.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the stores live (a temporary directory otherwise).
        #[arg(long)]
        data: Option<PathBuf>,
        /// HTTP address for the dashboard and API.
        #[arg(long)]
        http: Option<String>,
    },
}

fn load(path: &PathBuf) -> Result<CollectorConfig, ExitCode> {
    shared::config::load::<CollectorConfig>(path).map_err(|d| {
        eprintln!("{d}");
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
                for part in c.not_yet_supported() {
                    println!("{}: note: {part} is accepted but not acted on by this build", config.display());
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
                wait_for_signal().await;
                c.shutdown().await;
                Ok(())
            }))
        }
        Command::Demo { config, data, http } => {
            collector::init_tracing();
            finish(rt().block_on(async {
                let demo = Demo::start(DemoOptions { config, data, http, ..Default::default() }).await?;
                println!("citysense demo: {} sensors, 2 gateways, data in {}", demo.city.sensors().len(), demo.data.display());
                println!("citysense demo: MQTT broker at {}", demo.collector.mqtt_url);
                println!("citysense demo: force an anomaly: curl -X POST 'http://{}/force?sensor=aq-001&metric=pm25&value=180'  (then /clear?sensor=aq-001)", demo.control);
                println!("citysense demo: dashboard at http://{}  (Ctrl-C to stop)", demo.collector.http_addr);
                wait_for_signal().await;
                demo.shutdown().await;
                Ok(())
            }))
        }
    }
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
