//! Simulated MQTT sensors: each publishes `{"laeq": …, "ts": …}` on
//! `sensors/noise/{id}` at a fixed interval.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::task::JoinHandle;

use crate::city::{natural_value, SensorSpec};
use crate::control::Control;

pub const TOPIC_PREFIX: &str = "sensors/noise/";

/// Starts publishing for `sensors` to the broker at `host:port`.
pub fn start(host: &str, port: u16, sensors: Vec<SensorSpec>, every: Duration, control: Arc<Control>) -> JoinHandle<()> {
    let mut opts = MqttOptions::new(format!("citysense-sim-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(15));
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    tokio::spawn(async move {
        let publisher = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                let ts = shared::now_ms();
                for s in &sensors {
                    if control.is_silent(&s.id) || control.is_dropped(&s.id) {
                        continue;
                    }
                    let laeq = control.forced(&s.id, "noise_laeq").unwrap_or_else(|| natural_value(s, "noise_laeq", ts));
                    let payload = serde_json::json!({ "laeq": (laeq * 10.0).round() / 10.0, "ts": ts }).to_string();
                    // try_publish: a sensor with no broker drops its value, as real ones do.
                    let _ = client.try_publish(format!("{TOPIC_PREFIX}{}", s.id), QoS::AtMostOnce, false, payload);
                }
            }
        });
        loop {
            if let Err(e) = eventloop.poll().await {
                tracing::debug!("sim mqtt: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if publisher.is_finished() {
                return;
            }
        }
    })
}
