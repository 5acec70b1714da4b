//! `citysense-sim`: the simulated city on its own, for demos, tests and
//! commissioning practice.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sim::{run, City, Control, RunningCity};

#[derive(Parser)]
#[command(name = "citysense-sim", version, about = "A simulated city: Modbus TCP devices and MQTT noise sensors with realistic values")]
struct Cli {
    #[arg(long, default_value_t = 8)]
    air: usize,
    #[arg(long, default_value_t = 6)]
    traffic: usize,
    #[arg(long, default_value_t = 4)]
    water: usize,
    #[arg(long, default_value_t = 6)]
    noise: usize,
    /// Broker the noise sensors publish to (mqtt://HOST:PORT); none publish without it.
    #[arg(long)]
    mqtt: Option<String>,
    /// How often noise sensors publish.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    noise_every: Duration,
    /// Write the agent's [[modbus]]/[[mqtt]] tables that read this city to FILE.
    #[arg(long)]
    write_sources: Option<PathBuf>,
    /// Only the `counter` point of each device in --write-sources (fault tests).
    #[arg(long)]
    only_counter: bool,
    /// Poll interval written into --write-sources.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Hold a value: SENSOR:METRIC=VALUE (repeatable), e.g. aq-001:pm25=180.
    #[arg(long)]
    force: Vec<String>,
    /// A sensor that stops answering (repeatable).
    #[arg(long)]
    silent: Vec<String>,
    /// Write every served counter value to FILE as `SENSOR VALUE TS_MS` lines.
    #[arg(long)]
    counter_log: Option<PathBuf>,
    /// Also serve every Modbus device over RTU on this serial device or pty, as units 1..=N.
    #[arg(long)]
    rtu: Option<PathBuf>,
    /// The other end of the --rtu line (e.g. socat's second pty), written into --write-sources.
    #[arg(long)]
    rtu_link: Option<PathBuf>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// Control endpoint for forcing anomalies (POST /force, /clear, /silent, /drop).
    #[arg(long, default_value = "127.0.0.1:0")]
    control: std::net::SocketAddr,
    /// Give device N the port BASE+N instead of any free port.
    #[arg(long)]
    base_port: Option<u16>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let cli = Cli::parse();
    let mqtt = match &cli.mqtt {
        Some(u) => {
            let url = shared::url::BrokerUrl::parse(u).map_err(anyhow::Error::msg)?;
            Some((url.host, url.port))
        }
        None => None,
    };
    let plan = City { air: cli.air, traffic: cli.traffic, water: cli.water, noise: cli.noise };
    let city = RunningCity::start_with(plan, mqtt, cli.noise_every, cli.base_port, cli.counter_log.as_deref()).await?;
    if let Some(path) = &cli.rtu {
        let devices = city.devices.iter().map(|d| d.device.clone()).collect();
        sim::modbus::serve_rtu(&path.display().to_string(), cli.baud, devices)?;
        eprintln!("serving {} devices over RTU on {} (units 1..={})", city.devices.len(), path.display(), city.devices.len());
    }
    let control = sim::control_http::serve(cli.control, city.control.clone()).await?;
    eprintln!("anomaly control on http://{control} (POST /force?sensor=aq-001&metric=pm25&value=180, /clear, /silent, /drop)");
    for f in &cli.force {
        let (s, m, v) = Control::parse_force(f).map_err(anyhow::Error::msg)?;
        city.control.force(&s, &m, v);
    }
    for s in &cli.silent {
        city.control.set_silent(s, true);
    }
    for d in &city.devices {
        println!("{}", serde_json::json!({"sensor": d.device.spec.id, "kind": d.device.spec.kind, "modbus": format!("tcp://{}", d.addr), "unit": 1}));
    }
    for n in &city.noise {
        println!("{}", serde_json::json!({"sensor": n.id, "kind": n.kind, "mqtt_topic": format!("{}{}", sim::mqtt::TOPIC_PREFIX, n.id)}));
    }
    if let Some(path) = &cli.write_sources {
        let devices: Vec<_> = city.devices.iter().collect();
        let rtu_line = cli.rtu.as_ref().map(|p| format!("rtu://{}?baud={}", cli.rtu_link.as_ref().unwrap_or(p).display(), cli.baud));
        let mut text = run::modbus_toml_where(&devices, cli.interval, rtu_line.as_deref(), |p| !cli.only_counter || p.metric == "counter");
        if let (Some(u), false) = (&cli.mqtt, cli.only_counter) {
            text.push_str(&run::noise_toml(u));
        }
        // Written whole, then renamed, so a reader never sees half a file.
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        eprintln!("wrote agent sources to {}", path.display());
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
