//! The whole simulated city started at once, and the agent config that reads it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::city::{City, Kind, PointSpec, SensorSpec};
use crate::control::Control;
use crate::modbus::{Device, RunningDevice};

pub struct RunningCity {
    pub devices: Vec<RunningDevice>,
    pub noise: Vec<SensorSpec>,
    pub control: Arc<Control>,
    mqtt: Option<JoinHandle<()>>,
}

impl RunningCity {
    /// Starts every Modbus device on its own free loopback port, and the MQTT
    /// sensors publishing to `mqtt` (host, port) every `noise_every` when given.
    pub async fn start(city: City, mqtt: Option<(String, u16)>, noise_every: Duration) -> std::io::Result<RunningCity> {
        Self::start_with(city, mqtt, noise_every, None, None).await
    }

    /// As `start`, with device ports from `base_port` upwards (0: any free
    /// port) and every served counter value written to `counter_log`.
    pub async fn start_with(
        city: City,
        mqtt: Option<(String, u16)>,
        noise_every: Duration,
        base_port: Option<u16>,
        counter_log: Option<&std::path::Path>,
    ) -> std::io::Result<RunningCity> {
        let log = match counter_log {
            Some(p) => Some(Arc::new(std::sync::Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?))),
            None => None,
        };
        let control = Arc::new(Control::default());
        let mut devices = Vec::new();
        let mut noise = Vec::new();
        for spec in city.sensors() {
            if spec.kind == Kind::Noise {
                noise.push(spec);
                continue;
            }
            let port = base_port.map(|b| b + devices.len() as u16).unwrap_or(0);
            let dev = Arc::new(Device::new(spec, control.clone()).with_log(log.clone()));
            devices.push(RunningDevice::start(dev, SocketAddr::from(([127, 0, 0, 1], port))).await?);
        }
        let mqtt = mqtt.map(|(host, port)| crate::mqtt::start(&host, port, noise.clone(), noise_every, control.clone()));
        Ok(RunningCity { devices, noise, control, mqtt })
    }

    pub fn sensors(&self) -> Vec<SensorSpec> {
        self.devices.iter().map(|d| d.device.spec.clone()).chain(self.noise.iter().cloned()).collect()
    }

    pub fn device(&self, sensor: &str) -> Option<&RunningDevice> {
        self.devices.iter().find(|d| d.device.spec.id == sensor)
    }

    pub fn device_mut(&mut self, sensor: &str) -> Option<&mut RunningDevice> {
        self.devices.iter_mut().find(|d| d.device.spec.id == sensor)
    }
}

impl Drop for RunningCity {
    fn drop(&mut self) {
        if let Some(t) = self.mqtt.take() {
            t.abort();
        }
    }
}

/// `[[modbus]]` tables that read `devices` every `interval`: the same text a
/// technician would write, so demos and tests go through the real config path.
pub fn modbus_toml(devices: &[&RunningDevice], interval: Duration) -> String {
    modbus_toml_where(devices, interval, None, |_| true)
}

/// As `modbus_toml`, with only the points `keep` accepts, and the devices
/// reached over the serial line `rtu` (`rtu://PATH?...`, units 1..=N in
/// order) instead of TCP when given.
pub fn modbus_toml_where(devices: &[&RunningDevice], interval: Duration, rtu: Option<&str>, keep: impl Fn(&PointSpec) -> bool) -> String {
    let mut out = String::new();
    let every = humantime_ms(interval);
    for (i, d) in devices.iter().enumerate() {
        let spec = &d.device.spec;
        let (address, unit) = match rtu {
            Some(line) => (line.to_string(), i + 1),
            None => (format!("tcp://{}", d.addr), 1),
        };
        let _ = writeln!(
            out,
            "[[modbus]]\nsensor = \"{}\"\naddress = \"{address}\"\nunit = {unit}\ninterval = \"{every}\"\ntimeout = \"{}\"\nretries = 1",
            spec.id,
            humantime_ms(interval.min(Duration::from_secs(1)))
        );
        for p in d.device.points.iter().filter(|p| keep(p)) {
            let _ = writeln!(
                out,
                "  [[modbus.point]]\n  metric = \"{}\"\n  table = \"{}\"\n  address = {}\n  type = \"{}\"\n  order = \"{}\"\n  scale = {:?}\n  unit = \"{}\"",
                p.metric, p.table, p.address, p.data_type, p.order, p.scale, p.unit
            );
        }
        out.push('\n');
    }
    out
}

/// The `[[mqtt]]` table that reads the simulated noise sensors.
pub fn noise_toml(broker_url: &str) -> String {
    format!(
        "[[mqtt]]\nbroker = \"{broker_url}\"\ntopic = \"{}+\"\nsensor = \"topic:2\"\ntimestamp = \"json:ts\"\n  [mqtt.fields]\n  noise_laeq = \"laeq\"\n\n",
        crate::mqtt::TOPIC_PREFIX
    )
}

/// `[[sensor]]` catalogue entries for the collector.
pub fn catalogue_toml(sensors: &[SensorSpec]) -> String {
    let mut out = String::new();
    for s in sensors {
        let _ = writeln!(
            out,
            "[[sensor]]\nid = \"{}\"\nkind = \"{}\"\ndistrict = \"{}\"\nowner = \"{}\"\nlat = {:.5}\nlon = {:.5}\n",
            s.id,
            s.kind.name(),
            s.district,
            s.owner(),
            s.lat,
            s.lon
        );
    }
    out
}

fn humantime_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
