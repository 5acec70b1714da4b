//! `citysense-agent probe modbus` against the project's simulator and against
//! an independent pymodbus server, read from the printed report.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_citysense-agent");

fn probe(args: &[&str]) -> Output {
    Command::new(BIN).args(["probe", "modbus"]).args(args).output().unwrap()
}

/// The decoded value printed for `addr` in the column of `order`.
fn decoded(report: &str, addr: u16, order: &str) -> f64 {
    let header = report.lines().find(|l| l.contains("ABCD")).expect("a decoded table");
    let col = header.split_whitespace().skip(1).collect::<Vec<_>>().chunks(2).position(|c| c[1].trim_end_matches('*') == order).expect("order column");
    let row = report.lines().skip_while(|l| !l.contains("ABCD")).find(|l| l.split_whitespace().next() == Some(&addr.to_string())).expect("row");
    row.split_whitespace().nth(1 + col).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_shows_the_simulators_registers_in_every_order() {
    let city = sim::RunningCity::start(sim::City { air: 1, traffic: 0, water: 0, noise: 0 }, None, Duration::from_secs(1)).await.unwrap();
    city.control.force("aq-001", "pm25", 123.25);
    city.control.force("aq-001", "pm10", 77.5);
    city.control.force("aq-001", "no2", 41.125);
    let addr = city.devices[0].addr.to_string();
    let out = tokio::task::spawn_blocking(move || probe(&[&addr, "--start", "0", "--count", "6", "--type", "f32"])).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(decoded(&text, 0, "ABCD"), 123.25, "{text}");
    assert_eq!(decoded(&text, 2, "CDAB"), 77.5, "{text}");
    assert_eq!(decoded(&text, 4, "BADC"), 41.125, "{text}");
    assert_ne!(decoded(&text, 2, "ABCD"), 77.5, "{text}");

    let addr = city.devices[0].addr.to_string();
    let out = tokio::task::spawn_blocking(move || probe(&[&addr, "--start", "50", "--count", "2"])).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Modbus exception 2 (illegal data address)"));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = tokio::task::spawn_blocking(move || probe(&[&format!("127.0.0.1:{port}"), "--count", "1"])).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Connection refused"));
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn probe_reads_an_independent_pymodbus_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/pymodbus_server.py");
    let _server = Server(Command::new("python3").arg(script).arg(port.to_string()).spawn().expect("python3 with pymodbus (./tests/run installs it)"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pymodbus server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = format!("127.0.0.1:{port}");
    let out = probe(&[&a, "--start", "0", "--count", "8", "--type", "f32", "--order", "ABCD"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (addr, order) in [(0, "ABCD"), (2, "CDAB"), (4, "BADC"), (6, "DCBA")] {
        assert!((decoded(&text, addr, order) - 123.456).abs() < 1e-3, "{addr} {order}: {text}");
    }
    let out = probe(&[&a, "--start", "12", "--count", "4", "--type", "f64"]);
    assert_eq!(decoded(&String::from_utf8_lossy(&out.stdout), 12, "ABCD"), 1.5);
    let out = probe(&[&a, "--table", "coil", "--start", "0", "--count", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0  on (1)") && text.contains("1  off (0)"), "{text}");
}
