//! The embedded rumqttd broker, the default: the collector's own client talks
//! to it, or to an external broker, over TCP the same way.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::MqttError;

/// Starts the embedded broker on its own thread (rumqttd's `start` blocks and
/// has no shutdown; the process ending stops it) and returns once it accepts
/// connections. Port 0 picks a free port.
///
/// `users` (name → hex SHA-256 of the password): when given, only they may connect.
pub fn start_embedded(listen: SocketAddr, max_packet: usize, users: Option<Arc<HashMap<String, String>>>) -> Result<SocketAddr, MqttError> {
    // rumqttd binds by itself and does not report the port it got, so a free
    // port is found first; the OS will not hand it out again this quickly.
    // A taken port fails here, with the address in the message, rather than
    // in rumqttd's thread.
    let addr = TcpListener::bind(listen).and_then(|l| l.local_addr()).map_err(|source| MqttError::Bind { addr: listen, source })?;
    let mut connections =
        ConnectionSettings { connection_timeout_ms: 10_000, max_payload_size: max_packet, max_inflight_count: 200, auth: None, external_auth: None, dynamic_filters: true };
    if let Some(users) = users {
        connections.set_auth_handler(move |client_id: String, user: String, password: String| {
            let ok = users.get(&user).is_some_and(|h| shared::auth::matches_sha256(&password, h));
            if !ok {
                tracing::warn!(%user, %client_id, "MQTT connection refused: unknown user or wrong password");
            }
            async move { ok }
        });
    }
    let server = ServerSettings { name: "v4".into(), listen: addr, tls: None, next_connection_delay_ms: 0, connections };
    let router = RouterConfig {
        max_connections: 10_010,
        max_outgoing_packet_count: 500,
        max_segment_size: 100 << 20,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|source| MqttError::Bind { addr, source })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(MqttError::NotListening(addr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(addr)
}

/// `start_embedded` off the async threads (it waits for the listener).
pub async fn start_embedded_async(listen: SocketAddr, max_packet: usize, users: Option<Arc<HashMap<String, String>>>) -> Result<SocketAddr, MqttError> {
    tokio::task::spawn_blocking(move || start_embedded(listen, max_packet, users)).await.unwrap_or(Err(MqttError::NotListening(listen)))
}
