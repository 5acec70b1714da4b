//! The MQTT feed: `alerts/{severity}/{sensor}` (QoS 1, every change) and
//! `live/{sensor}/{metric}` (QoS 0, every stored reading).
//!
//! Two tasks on two connections: at 100k readings/s the live feed is 100k
//! publishes a second, and an alert queued behind them (on the same task or
//! the same connection) waited tens of milliseconds.

use rumqttc::{AsyncClient, QoS};
use shared::topics;
use tokio::sync::broadcast::error::RecvError;

use crate::messages::{Bus, FeedEvent};

pub async fn alerts(bus: Bus, client: AsyncClient) {
    let mut rx = bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(FeedEvent::Alert(ev)) => {
                let topic = topics::alert(ev.alert.severity.as_str(), &ev.alert.sensor);
                let payload = serde_json::to_vec(&ev).expect("alert serializes");
                if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, payload).await {
                    tracing::warn!("alert feed: {e}");
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::error!("MQTT alert feed fell behind and skipped {n} events (the alert store and SSE have them)"),
            Err(RecvError::Closed) => return,
        }
    }
}

pub async fn live(bus: Bus, client: AsyncClient) {
    let mut rx = bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(FeedEvent::Readings(readings)) => {
                for r in readings.iter() {
                    let live = r.sample();
                    // Live values are a view, not a record: dropped when the link is busy.
                    let _ = client.try_publish(topics::live(&r.sensor, &r.metric), QoS::AtMostOnce, false, serde_json::to_vec(&live).expect("live serializes"));
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::warn!("MQTT live feed fell behind and skipped {n} events"),
            Err(RecvError::Closed) => return,
        }
    }
}
