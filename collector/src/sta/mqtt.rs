//! MQTT receiving updates (conformance class 8): every stored reading of a
//! catalogued sensor is published, as the Observation's full JSON, on
//! `v1.1/Datastreams('{id}')/Observations` and `v1.1/Observations` of the
//! collector's broker (QoS 0, like the live feed, dropped when the link is
//! busy). Readers (`[[mqtt.user]]`) may subscribe there; nobody may publish
//! there (`mqtt::acl`). `$select` in the topic is not supported.

use std::collections::HashSet;
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use serde_json::{json, Value as Json};
use shared::Reading;
use tokio::sync::broadcast::error::RecvError;

use super::ids::{datastream_id, entity_path, observation_id, Set};
use crate::catalogue::SensorEntry;
use crate::messages::{Bus, FeedEvent};
use crate::mqtt::acl::STA_TOPIC_PREFIX;

/// The topic of one Datastream's new Observations.
pub fn datastream_topic(datastream: &str) -> String {
    format!("{STA_TOPIC_PREFIX}{}/Observations", entity_path(Set::Datastreams, datastream))
}

pub const OBSERVATIONS_TOPIC: &str = "v1.1/Observations";

/// An Observation's JSON as the HTTP API renders it, links under `base`.
pub fn observation_json(base: &str, r: &Reading) -> Json {
    let id = observation_id(&r.sensor, &r.metric, r.ts_ms);
    let link = format!("{base}/{}", entity_path(Set::Observations, &id));
    let mut v = json!({ "@iot.id": id, "@iot.selfLink": link });
    let o = v.as_object_mut().expect("an object");
    o.extend(super::model::observation_properties(&r.sample()));
    o.insert("Datastream@iot.navigationLink".into(), json!(format!("{link}/Datastream")));
    o.insert("FeatureOfInterest@iot.navigationLink".into(), json!(format!("{link}/FeatureOfInterest")));
    v
}

/// Publishes each stored reading of a catalogued sensor until the bus closes.
pub async fn publish(bus: Bus, client: AsyncClient, catalogue: Arc<Vec<SensorEntry>>, base: String, speaking: crate::cluster::speaker::Speaking) {
    let catalogued: HashSet<String> = catalogue.iter().map(|e| e.id.to_string()).collect();
    let mut rx = bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(FeedEvent::Readings(readings)) if speaking.borrow().speaking => {
                for r in readings.iter().filter(|r| catalogued.contains(r.sensor.as_str())) {
                    let payload = serde_json::to_vec(&observation_json(&base, r)).expect("JSON serializes");
                    let topic = datastream_topic(&datastream_id(&r.sensor, &r.metric));
                    let _ = client.try_publish(topic, QoS::AtMostOnce, false, payload.clone());
                    let _ = client.try_publish(OBSERVATIONS_TOPIC, QoS::AtMostOnce, false, payload);
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::warn!("SensorThings MQTT updates fell behind and skipped {n} events"),
            Err(RecvError::Closed) => return,
        }
    }
}
