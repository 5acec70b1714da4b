//! What the test crates, the fault harness and the benchmarks share, so that
//! each is written once: a raw HTTP client for the collector's API (no client
//! library between the test and the wire), waiting on a condition with a
//! deadline, starting the real peers the tests need (Mosquitto,
//! VictoriaMetrics, a NATS cluster) on loopback, a gateway played by the test, a feed
//! subscriber, and a collector on free ports.

mod collector;
mod gateway;
mod http;
mod nats;
mod peers;
mod sse;
mod subscriber;
mod wait;

pub use collector::{collector, latest, rejected, series_values};
pub use gateway::{FakeGateway, Identity};
pub use http::{get, get_json, metric, metric_in, partitions_held, post, request, request_as, request_with, try_get, try_request};
pub use nats::{NatsCluster, NodePlan};
pub use peers::{Child, Mosquitto, Victoria};
pub use shared::now_ms;
pub use sse::SseClient;
pub use subscriber::{json_feed, json_feed_as};
pub use wait::{free_port, port_below_ephemeral, wait_for, wait_for_port};
