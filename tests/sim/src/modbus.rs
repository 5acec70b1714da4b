//! Simulated Modbus TCP devices, one listener each, served by tokio-modbus.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response};

use crate::city::{natural_value, register_map, PointSpec, SensorSpec, COUNTER_ADDRESS};
use crate::control::Control;
use shared::modbus::encode_registers;

/// One device's state: what it is and how often its counter was read.
pub struct Device {
    pub spec: SensorSpec,
    pub points: Vec<PointSpec>,
    counter: AtomicU32,
    control: Arc<Control>,
    log: Option<CounterLog>,
}

/// Where every counter value served is written as `SENSOR VALUE TS_MS`, one per
/// line, so a fault test can tell which values the agent was given.
pub type CounterLog = Arc<std::sync::Mutex<std::fs::File>>;

impl Device {
    pub fn new(spec: SensorSpec, control: Arc<Control>) -> Device {
        Device { points: register_map(spec.kind), spec, counter: AtomicU32::new(0), control, log: None }
    }

    pub fn with_log(mut self, log: Option<CounterLog>) -> Device {
        self.log = log;
        self
    }

    /// The number of times the counter register has been read.
    pub fn counter(&self) -> u32 {
        self.counter.load(Ordering::SeqCst)
    }

    fn value(&self, metric: &str, ts_ms: i64) -> f64 {
        self.control.forced(&self.spec.id, metric).unwrap_or_else(|| natural_value(&self.spec, metric, ts_ms))
    }

    /// Words (or bits as 0/1) of `table` from `start`, `count` long; an address
    /// no point covers is an exception, as on real devices.
    fn read(&self, table: &str, start: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        let ts = shared::now_ms();
        let mut image: HashMap<u16, u16> = HashMap::new();
        let end = start as u32 + count as u32;
        for p in self.points.iter().filter(|p| p.table == table) {
            let width = p.data_type().registers() as u32;
            if (p.address as u32) + width <= start as u32 || p.address as u32 >= end {
                continue;
            }
            let raw = if p.address == COUNTER_ADDRESS && p.metric == "counter" {
                let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(log) = &self.log {
                    use std::io::Write as _;
                    let _ = writeln!(log.lock().unwrap(), "{} {n} {ts}", self.spec.id);
                }
                n as f64
            } else {
                // Scaled points hold integers on the wire, as on real devices.
                let v = self.value(p.metric, ts) / p.scale;
                if p.scale != 1.0 {
                    v.round()
                } else {
                    v
                }
            };
            for (k, w) in encode_registers(raw, p.data_type(), p.order()).into_iter().enumerate() {
                image.insert(p.address + k as u16, w);
            }
        }
        (start..end.min(65536) as u16).map(|a| image.get(&a).copied().ok_or(ExceptionCode::IllegalDataAddress)).collect()
    }
}

#[derive(Clone)]
struct Service(Arc<Device>);

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let dev = self.0.clone();
        Box::pin(async move {
            if dev.control.is_silent(&dev.spec.id) || dev.control.is_dropped(&dev.spec.id) {
                // A hung device: the request is never answered.
                std::future::pending::<()>().await;
            }
            let bits = |w: Vec<u16>| w.into_iter().map(|x| x != 0).collect::<Vec<bool>>();
            match req {
                Request::ReadHoldingRegisters(a, n) => dev.read("holding", a, n).map(Response::ReadHoldingRegisters),
                Request::ReadInputRegisters(a, n) => dev.read("input", a, n).map(Response::ReadInputRegisters),
                Request::ReadCoils(a, n) => dev.read("coil", a, n).map(|w| Response::ReadCoils(bits(w))),
                Request::ReadDiscreteInputs(a, n) => dev.read("discrete", a, n).map(|w| Response::ReadDiscreteInputs(bits(w))),
                _ => Err(ExceptionCode::IllegalFunction),
            }
        })
    }
}

/// A device on the network; dropping the handle (or `take_offline`) closes it.
pub struct RunningDevice {
    pub device: Arc<Device>,
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl RunningDevice {
    /// Listens on `addr` (port 0 for any free port).
    pub async fn start(device: Arc<Device>, addr: SocketAddr) -> std::io::Result<RunningDevice> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = Some(spawn_server(listener, device.clone()));
        Ok(RunningDevice { device, addr, task })
    }

    /// Drops the device off the network: open connections close and new ones are refused.
    pub fn take_offline(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Brings it back on the same address.
    pub async fn bring_online(&mut self) -> std::io::Result<()> {
        if self.task.is_none() {
            let listener = TcpListener::bind(self.addr).await?;
            self.task = Some(spawn_server(listener, self.device.clone()));
        }
        Ok(())
    }
}

impl Drop for RunningDevice {
    fn drop(&mut self) {
        self.take_offline();
    }
}

fn spawn_server(listener: TcpListener, device: Arc<Device>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let server = Server::new(listener);
        let service = Service(device.clone());
        let on_connected = |stream, socket_addr| {
            let service = service.clone();
            async move {
                if service.0.control.is_dropped(&service.0.spec.id) {
                    // Off the network: the connection is closed at once.
                    return Ok(None);
                }
                accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(service.clone())))
            }
        };
        let on_error = |e| tracing::debug!("sim modbus connection error: {e}");
        if let Err(e) = server.serve(&on_connected, on_error).await {
            tracing::error!(sensor = %device.spec.id, "modbus server stopped: {e}");
        }
    })
}

/// Every device of one serial line, answering by unit id (position + 1).
#[derive(Clone)]
struct Bus(Arc<Vec<Arc<Device>>>);

impl tokio_modbus::server::Service for Bus {
    type Request = tokio_modbus::SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let unit = req.slave as usize;
        // An absent or silent unit does not answer at all, as on a real bus.
        let Some(dev) = unit.checked_sub(1).and_then(|i| self.0.get(i)).filter(|d| !d.control.is_silent(&d.spec.id) && !d.control.is_dropped(&d.spec.id)) else {
            return std::future::ready(Ok(None));
        };
        let bits = |w: Vec<u16>| w.into_iter().map(|x| x != 0).collect::<Vec<bool>>();
        let answer = match req.request {
            Request::ReadHoldingRegisters(a, n) => dev.read("holding", a, n).map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, n) => dev.read("input", a, n).map(Response::ReadInputRegisters),
            Request::ReadCoils(a, n) => dev.read("coil", a, n).map(|w| Response::ReadCoils(bits(w))),
            Request::ReadDiscreteInputs(a, n) => dev.read("discrete", a, n).map(|w| Response::ReadDiscreteInputs(bits(w))),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        std::future::ready(answer.map(Some))
    }
}

/// Serves `devices` as units 1..=N of a Modbus RTU line on the serial device
/// (or pty) at `path`.
pub fn serve_rtu(path: &str, baud: u32, devices: Vec<Arc<Device>>) -> std::io::Result<JoinHandle<()>> {
    use tokio_serial::SerialPortBuilderExt;
    let port = tokio_serial::new(path, baud).open_native_async().map_err(std::io::Error::other)?;
    let server = tokio_modbus::server::rtu::Server::new(port);
    let path = path.to_string();
    Ok(tokio::spawn(async move {
        if let Err(e) = server.serve_forever(Bus(Arc::new(devices))).await {
            tracing::error!("sim RTU server on {path} stopped: {e}");
        }
    }))
}
