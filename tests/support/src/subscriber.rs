//! A feed consumer on a broker: JSON messages of one topic filter, as
//! emergency command, a duty desk or a monitoring system would take them.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

/// Connects to `url` as `client_id`, subscribes to `filter` (again after
/// every reconnect) and returns once the broker has granted the
/// subscription: each message after that arrives as (topic, JSON payload).
pub async fn json_feed(url: &str, client_id: &str, filter: &str, qos: QoS) -> UnboundedReceiver<(String, Value)> {
    json_feed_as(url, client_id, None, filter, qos).await
}

/// As `json_feed`, logged in as `login` (user, password).
pub async fn json_feed_as(url: &str, client_id: &str, login: Option<(&str, &str)>, filter: &str, qos: QoS) -> UnboundedReceiver<(String, Value)> {
    let b = shared::url::BrokerUrl::parse(url).unwrap();
    let mut options = MqttOptions::new(client_id, b.host, b.port);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut el) = AsyncClient::new(options, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (granted_tx, granted) = tokio::sync::oneshot::channel();
    let topic = filter.to_string();
    tokio::spawn(async move {
        let mut granted_tx = Some(granted_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => client.subscribe(topic.as_str(), qos).await.unwrap(),
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    // A refused filter is a failed test, not a feed that stays silent.
                    let refused = ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if let Some(g) = granted_tx.take() {
                        let _ = g.send(if refused { Err(format!("{:?}", ack.return_codes)) } else { Ok(()) });
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), serde_json::from_slice(&p.payload).unwrap()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), granted).await.unwrap_or_else(|_| panic!("{client_id}: no SUBACK for {filter} within 30 s")).unwrap();
    if let Err(codes) = answer {
        panic!("{client_id}: the broker refused {filter}: {codes}");
    }
    rx
}
