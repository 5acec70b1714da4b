//! The MQTT side: an embedded rumqttd broker (default) and the collector's own
//! client, which talks to it, or to an external broker, over TCP the same way.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts the embedded broker on its own thread (rumqttd's `start` blocks and
/// has no shutdown; the process ending stops it) and returns once it accepts
/// connections. Port 0 picks a free port.
///
/// `users` (name → hex SHA-256 of the password): when given, only they may connect.
pub fn start_embedded(listen: SocketAddr, max_packet: usize, users: Option<Arc<HashMap<String, String>>>) -> anyhow::Result<SocketAddr> {
    // rumqttd binds by itself and does not report the port it got, so a free
    // port is found first; the OS will not hand it out again this quickly.
    let addr = if listen.port() == 0 {
        TcpListener::bind(listen)?.local_addr()?
    } else {
        // Fail here, with the address in the message, rather than in rumqttd's thread.
        drop(TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("cannot listen for MQTT on {listen}: {e}"))?);
        listen
    };
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: max_packet,
        max_inflight_count: 200,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
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
    std::thread::Builder::new().name("rumqttd".into()).spawn(move || {
        let mut broker = Broker::new(config);
        if let Err(e) = broker.start() {
            tracing::error!("embedded MQTT broker stopped: {e}");
        }
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            anyhow::bail!("embedded MQTT broker did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(addr)
}
