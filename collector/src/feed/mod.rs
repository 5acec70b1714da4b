//! Live feeds for operations centres and emergency command: every stored
//! reading, alert change and gateway change goes onto one broadcast bus
//! (`messages::Bus`), from which the MQTT feed, each SSE client
//! (`http::stream`) and the webhooks take what they want.

pub mod mqtt;
pub mod webhook;
