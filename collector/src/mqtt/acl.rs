//! Who may do what on the embedded broker. rumqttd checks passwords but has
//! no ACLs, so the front (`front.rs`) reads each client packet and asks the
//! user's `Grant`: a gateway may publish only its own `up`/`state`/`health`
//! (retained only on `state`, never QoS 2), subscribe only to its own `ack`,
//! leave a will only where it may publish, and connect only as
//! `citysense-agent-<gateway>`; a reader may only subscribe to the feeds
//! (and the SensorThings updates under `v1.1/`),
//! never publish or leave a will, and connect only with its client-id prefix.

use std::collections::HashMap;

use rumqttc::mqttbytes::QoS;
use shared::topics;

/// The client id an agent connects with (agent/src/uplink/mod.rs makes the same).
pub fn agent_client_id(gateway: &str) -> String {
    format!("citysense-agent-{gateway}")
}

/// SensorThings updates (`crate::sta::mqtt`): readers may subscribe, nobody may publish.
pub const STA_TOPIC_PREFIX: &str = "v1.1/";

/// The namespace of the collector's own client ids: no one else may use it.
pub const COLLECTOR_ID_PREFIX: &str = "citysense-collector-";

/// What a user's grant does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("a feed reader may not publish (to {0})")]
    ReaderPublish(String),
    #[error("gateway {gateway} may not publish to {topic}")]
    Topic { gateway: String, topic: String },
    #[error("QoS 2 on {0}: gateways publish at QoS 0 or 1")]
    Qos2(String),
    #[error("retained message on {topic}: only {state} may be retained")]
    Retained { topic: String, state: String },
    #[error("a feed reader may not leave a will (on {0})")]
    ReaderWill(String),
    #[error("will: {0}")]
    Will(Box<Denied>),
    #[error("gateway {gateway} must connect as client id `{expected}`, not `{client_id}`")]
    GatewayClientId { gateway: String, expected: String, client_id: String },
    #[error("client id `{client_id}` does not start with this user's prefix `{prefix}` (followed by at least one character)")]
    ReaderClientId { client_id: String, prefix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A gateway: its own uplink topics, its own acks.
    Gateway(String),
    /// A feed consumer: reads alerts, live readings, gateway state and
    /// health; its client ids start with `client_prefix`.
    Reader { client_prefix: String },
}

impl Grant {
    /// Why `user` may not publish this, or Ok. The same rule holds for a will.
    pub fn check_publish(&self, topic: &str, qos: QoS, retain: bool) -> Result<(), Denied> {
        let Grant::Gateway(g) = self else { return Err(Denied::ReaderPublish(topic.to_string())) };
        if ![topics::up(g), topics::state(g), topics::health(g)].iter().any(|t| t == topic) {
            return Err(Denied::Topic { gateway: g.clone(), topic: topic.to_string() });
        }
        if qos == QoS::ExactlyOnce {
            return Err(Denied::Qos2(topic.to_string()));
        }
        // Only the state is kept for new subscribers; a retained batch or health would be replayed forever.
        if retain && topic != topics::state(g) {
            return Err(Denied::Retained { topic: topic.to_string(), state: topics::state(g) });
        }
        Ok(())
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.check_publish(topic, QoS::AtLeastOnce, false).is_ok() || self.check_publish(topic, QoS::AtLeastOnce, true).is_ok()
    }

    pub fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Grant::Gateway(g) => filter == topics::ack(g),
            Grant::Reader { .. } => {
                ["alerts/", "incidents/", "live/", "state/", "health/"].iter().any(|p| filter.starts_with(&format!("{}{p}", topics::PREFIX)))
                    || filter.starts_with(STA_TOPIC_PREFIX)
            }
        }
    }

    /// A will is published by the broker in the client's name when its
    /// connection drops, so it is held to the publish grant; readers have none.
    pub fn check_will(&self, topic: &str, qos: QoS, retain: bool) -> Result<(), Denied> {
        match self {
            Grant::Reader { .. } => Err(Denied::ReaderWill(topic.to_string())),
            Grant::Gateway(_) => self.check_publish(topic, qos, retain).map_err(|e| Denied::Will(Box::new(e))),
        }
    }

    /// Whether this user may connect as `client_id`: a client id taken over
    /// knocks its owner off the broker, so each user has its own.
    pub fn check_client_id(&self, client_id: &str) -> Result<(), Denied> {
        match self {
            Grant::Gateway(g) if client_id == agent_client_id(g) => Ok(()),
            Grant::Gateway(g) => Err(Denied::GatewayClientId { gateway: g.clone(), expected: agent_client_id(g), client_id: client_id.to_string() }),
            Grant::Reader { client_prefix } if client_id.len() > client_prefix.len() && client_id.starts_with(client_prefix.as_str()) => Ok(()),
            Grant::Reader { client_prefix } => Err(Denied::ReaderClientId { client_id: client_id.to_string(), prefix: client_prefix.clone() }),
        }
    }
}

pub type Acl = HashMap<String, Grant>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_is_confined_to_its_own_topics() {
        let g = Grant::Gateway("gw-a".into());
        assert!(g.may_publish(&topics::up("gw-a")) && g.may_publish(&topics::state("gw-a")) && g.may_publish(&topics::health("gw-a")));
        assert!(!g.may_publish(&topics::up("gw-b")) && !g.may_publish(&topics::ack("gw-a")) && !g.may_publish("sensors/x"));
        assert!(g.may_subscribe(&topics::ack("gw-a")));
        assert!(!g.may_subscribe(&topics::ack("gw-b")) && !g.may_subscribe(&format!("{}ack/+", topics::PREFIX)) && !g.may_subscribe("#"));
        let r = Grant::Reader { client_prefix: "ops-".into() };
        assert!(r.may_subscribe(&format!("{}alerts/#", topics::PREFIX)) && !r.may_subscribe(&format!("{}ack/#", topics::PREFIX)) && !r.may_subscribe("#"));
        assert!(!r.may_publish(&topics::up("gw-a")));
    }

    #[test]
    fn readers_may_follow_incidents_and_nobody_may_publish_there() {
        let topic = crate::incident::feed::topic("water", 7);
        let (r, g) = (Grant::Reader { client_prefix: "ops-".into() }, Grant::Gateway("gw-a".into()));
        assert!(r.may_subscribe(&topic) && r.may_subscribe(&format!("{}incidents/#", topics::PREFIX)));
        assert!(!g.may_subscribe(&topic));
        assert!(!r.may_publish(&topic) && !g.may_publish(&topic));
    }

    #[test]
    fn readers_may_follow_sensorthings_updates_and_nobody_may_publish_there() {
        let topic = "v1.1/Datastreams('aq-001~pm25')/Observations";
        let (r, g) = (Grant::Reader { client_prefix: "ops-".into() }, Grant::Gateway("gw-a".into()));
        assert!(r.may_subscribe(topic) && r.may_subscribe("v1.1/Observations"));
        assert!(!g.may_subscribe(topic));
        assert!(!r.may_publish(topic) && !g.may_publish(topic) && !g.may_publish("v1.1/Observations"));
    }

    #[test]
    fn wills_retain_qos_and_client_ids_follow_the_grant() {
        let g = Grant::Gateway("gw-a".into());
        // The agent's own will: retained offline state at QoS 1.
        assert!(g.check_will(&topics::state("gw-a"), QoS::AtLeastOnce, true).is_ok());
        assert!(g.check_will(&topics::state("gw-b"), QoS::AtLeastOnce, true).is_err());
        assert!(g.check_will(&format!("{}alerts/emergency/wl-001", topics::PREFIX), QoS::AtMostOnce, false).is_err());
        assert!(g.check_publish(&topics::up("gw-a"), QoS::AtLeastOnce, true).is_err(), "retained batch");
        assert!(g.check_publish(&topics::up("gw-a"), QoS::ExactlyOnce, false).is_err(), "QoS 2");
        let r = Grant::Reader { client_prefix: "ops-".into() };
        assert!(r.check_will(&topics::state("gw-a"), QoS::AtMostOnce, false).is_err());
        assert!(g.check_client_id("citysense-agent-gw-a").is_ok());
        for id in ["citysense-agent-gw-b", "citysense-collector-1", "", "citysense-agent-gw-a-2"] {
            assert!(g.check_client_id(id).is_err(), "{id}");
        }
        assert!(r.check_client_id("ops-1").is_ok() && r.check_client_id("ops-").is_err() && r.check_client_id("citysense-agent-gw-a").is_err());
    }
}
