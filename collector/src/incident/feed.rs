//! Incident events on MQTT: `citysense/v1/incidents/{department}/{id}` (QoS 1)
//! for each department an event is addressed to (`unassigned` while nobody
//! owns it). Readers may subscribe; nobody but the collector publishes there.

use rumqttc::{AsyncClient, QoS};
use shared::topics;
use tokio::sync::broadcast::error::RecvError;

use crate::cluster::speaker::Speaking;
use crate::messages::{Bus, FeedEvent};

/// Where incident events go: `citysense/v1/incidents/`.
pub fn topic(department: &str, id: u64) -> String {
    format!("{}incidents/{department}/{id}", topics::PREFIX)
}

pub const UNASSIGNED: &str = "unassigned";

pub async fn publish(bus: Bus, client: AsyncClient, speaking: Speaking) {
    let mut rx = bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(FeedEvent::Incident(news)) if speaking.borrow().speaking => {
                let to = if news.departments.is_empty() { vec![UNASSIGNED.to_string()] } else { news.departments.clone() };
                for d in to {
                    if let Err(e) = client.publish(topic(&d, news.id), QoS::AtLeastOnce, false, news.json.as_bytes().to_vec()).await {
                        tracing::warn!("incident feed: {e}");
                    }
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::error!("MQTT incident feed fell behind and skipped {n} events (the incident store, SSE and webhooks have them)"),
            Err(RecvError::Closed) => return,
        }
    }
}
