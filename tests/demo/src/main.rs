//! `citysense-demo`: collector, simulated city and agents in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use demo::{Demo, DemoOptions};

/// Collector, simulated city (24 sensors, 2 gateways) and agents in one process; dashboard on http://127.0.0.1:8080.
#[derive(Parser)]
#[command(name = "citysense-demo", version)]
struct Cli {
    /// Extra collector settings layered over the demo's own.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the stores live (a temporary directory otherwise).
    #[arg(long)]
    data: Option<PathBuf>,
    /// HTTP address for the dashboard and API.
    #[arg(long)]
    http: Option<String>,
}

fn main() -> ExitCode {
    let Cli { config, data, http } = Cli::parse();
    collector::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let run = rt.block_on(async {
        let demo = Demo::start(DemoOptions { config, data, http, ..Default::default() }).await?;
        println!("citysense demo: {} sensors, 2 gateways, data in {}", demo.city.sensors().len(), demo.data.display());
        println!("citysense demo: MQTT broker at {}", demo.collector.mqtt_url);
        println!("citysense demo: force an anomaly: curl -X POST 'http://{}/force?sensor=aq-001&metric=pm25&value=180'  (then /clear?sensor=aq-001)", demo.control);
        println!("citysense demo: dashboard at http://{}  (Ctrl-C to stop)", demo.collector.http_addr);
        println!("citysense demo: open data (OGC SensorThings) at http://{}/sta/v1.1/", demo.collector.http_addr);
        collector::wait_for_signal().await;
        demo.shutdown().await;
        anyhow::Ok(())
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citysense-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
