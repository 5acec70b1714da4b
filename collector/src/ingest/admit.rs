//! Admission: is this message a batch from the gateway whose topic it came
//! on, within its rate? Opens the HMAC seal (when batch keys are in use),
//! decodes, checks the gateway and the ids, takes the rate limit. Everything
//! refused is a `Rejection`, logged here; nothing refused goes further.

use std::collections::HashMap;
use std::sync::Arc;

use shared::Batch;

use super::rate::RateLimit;
use super::Rejection;
use crate::messages::Incoming;

pub struct Admission {
    /// Gateways' batch keys. When there are any, every batch must carry the
    /// HMAC of its topic's gateway, and acks are signed.
    pub keys: HashMap<String, Arc<Vec<u8>>>,
    pub rate: RateLimit,
}

impl Admission {
    /// Opens, decodes and admits one message: the batch, or why not.
    pub fn admit(&mut self, m: &Incoming) -> Result<Batch, Rejection> {
        let payload: &[u8] = if self.keys.is_empty() {
            &m.payload
        } else {
            match self.keys.get(&m.gateway).map(|k| shared::auth::open_batch(k, &m.payload)) {
                Some(Some(batch)) => batch,
                Some(None) => {
                    tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: its HMAC is not that of gateway {}'s key (forged, altered, or sent by another gateway)", m.gateway);
                    return Err(Rejection::Unauthenticated);
                }
                None => {
                    tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: no [[gateway]] batch key for {}", m.gateway);
                    return Err(Rejection::UnknownGateway);
                }
            }
        };
        let batch = Batch::decode(payload).map_err(|e| {
            tracing::warn!(gateway = %m.gateway, bytes = m.payload.len(), "rejected batch: {e}");
            Rejection::from(&e)
        })?;
        if batch.gateway != m.gateway {
            tracing::warn!(topic_gateway = %m.gateway, batch_gateway = %batch.gateway, "rejected batch: gateway in the batch does not match its topic");
            return Err(Rejection::GatewayMismatch);
        }
        // The same id rules as the configs: what is stored is shown, exported and put in topics.
        if let Some(r) = batch.readings.iter().find(|r| !shared::topics::valid_id(r.sensor.as_str()) || !shared::topics::valid_id(r.metric.as_str())) {
            let shown = |s: &str| s.chars().take(64).collect::<String>().escape_debug().to_string();
            tracing::warn!(gateway = %m.gateway, sensor = %shown(r.sensor.as_str()), metric = %shown(r.metric.as_str()), "rejected batch: a sensor or metric id is not 1-128 of A-Z a-z 0-9 - _ . :");
            return Err(Rejection::InvalidId);
        }
        if let Err(refused) = self.rate.admit(&m.gateway, batch.readings.len()) {
            // Not acknowledged: the agent keeps the readings and sends them again.
            if refused.log {
                tracing::warn!(gateway = %m.gateway, "batch refused: over mqtt.gateway_rate ({} readings/s); the agent will resend it", self.rate.rate());
            }
            return Err(Rejection::RateLimited);
        }
        Ok(batch)
    }
}
