//! The real peers the tests run against, started on loopback with their data
//! in the caller's directory: Debian's Mosquitto and VictoriaMetrics (which
//! speaks InfluxDB's v2 write API). `tests/run` installs both.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// A child process killed when the test ends, pass or fail.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Blocks until `port` accepts connections: usable from sync and async code
/// alike (peers start in well under a second).
fn wait_listening(port: u16, what: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on 127.0.0.1:{port} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Mosquitto on a free loopback port.
pub struct Mosquitto {
    pub port: u16,
    _child: Child,
}

impl Mosquitto {
    /// `extra`: configuration lines after the listener (e.g. `allow_anonymous true`).
    pub fn start(dir: &Path, extra: &str) -> Result<Mosquitto> {
        let port = crate::free_port();
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\n{extra}\n"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .context("mosquitto is not installed: ./tests/run installs it (apt-get install mosquitto)")?;
        let child = Child(child);
        wait_listening(port, "mosquitto", Duration::from_secs(20))?;
        Ok(Mosquitto { port, _child: child })
    }

    /// An open broker, as the end-to-end tests use it.
    pub fn open(dir: &Path) -> Result<Mosquitto> {
        // Without TCP_NODELAY Mosquitto's small forwards (an ack, one
        // reading's batch) can sit behind the peer's delayed ACK for ~40 ms.
        Mosquitto::start(dir, "allow_anonymous true\npersistence false\nmax_packet_size 16777216\nmax_queued_messages 100000\nset_tcp_nodelay true")
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

/// VictoriaMetrics on loopback, keeping its data in `data` across restarts.
pub struct Victoria {
    child: Option<Child>,
    pub port: u16,
    pub data: PathBuf,
}

impl Victoria {
    pub fn start(data: &Path, port: u16) -> Result<Victoria> {
        Victoria::start_niced(data, port, 0)
    }

    /// At `nice` (0: as any process): a benchmark on one machine can give
    /// the database, which in a deployment has its own, the CPU the
    /// collector leaves idle rather than an equal share.
    pub fn start_niced(data: &Path, port: u16, nice: i32) -> Result<Victoria> {
        let mut command = Command::new("nice");
        command.arg("-n").arg(nice.to_string()).arg("victoria-metrics");
        let child = command
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", data.display()))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .spawn()
            .context("victoria-metrics is not installed: ./tests/run installs it (apt-get install victoria-metrics)")?;
        let vm = Victoria { child: Some(Child(child)), port, data: data.to_path_buf() };
        wait_listening(port, "victoria-metrics", Duration::from_secs(30))?;
        Ok(vm)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    /// A clean stop (SIGTERM): what it confirmed is on disk.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.0.id().to_string()).status();
            let _ = c.0.wait();
        }
    }

    /// Stops it and starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        *self = Victoria::start(&self.data.clone(), self.port)?;
        Ok(())
    }
}
