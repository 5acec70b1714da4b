//! Where what the broker delivers goes: `up` batches to ingest (a bounded
//! channel, so a flood slows the broker connection rather than growing
//! memory); `state` and `health` to the live view, the rule engine and the feeds.

use std::sync::Arc;

use rumqttc::Publish;
use shared::topics;
use shared::wire::{Health, State, Status};
use tokio::sync::mpsc;

use super::client::Inbound;
use crate::messages::{Bus, FeedEvent, Incoming, RuleInput};
use crate::registry::Registry;

pub struct Router {
    pub ingest: mpsc::Sender<Incoming>,
    pub rules: mpsc::Sender<RuleInput>,
    pub registry: Arc<Registry>,
    pub feed: Bus,
}

impl Inbound for Router {
    async fn publish(&mut self, p: Publish) -> bool {
        if let Some(gw) = topics::gateway_of(&p.topic, "up") {
            return self.ingest.send(Incoming { gateway: gw.to_string(), payload: p.payload, settled: None, logged_ms: None }).await.is_ok();
        }
        if let Some(gw) = topics::gateway_of(&p.topic, "state") {
            match serde_json::from_slice::<State>(&p.payload) {
                Ok(s) => {
                    let ts_ms = self.registry.state(gw, s.status, s.ts_ms);
                    let online = s.status == Status::Online;
                    let _ = self.rules.try_send(RuleInput::GatewayState { gateway: gw.to_string(), online });
                    let _ = self.feed.send(FeedEvent::Gateway { id: gw.to_string(), status: if online { "online" } else { "offline" }, ts_ms });
                }
                Err(e) => tracing::warn!(topic = %p.topic, "ignoring malformed state: {e}"),
            }
        } else if let Some(gw) = topics::gateway_of(&p.topic, "health") {
            match serde_json::from_slice::<Health>(&p.payload) {
                Ok(h) => {
                    self.registry.health(gw, h);
                    let _ = self.rules.try_send(RuleInput::GatewayHeard { gateway: gw.to_string() });
                }
                Err(e) => tracing::warn!(topic = %p.topic, "ignoring malformed health: {e}"),
            }
        }
        true
    }
}
