//! The MQTT feed: `alerts/{severity}/{sensor}` (QoS 1, every change) and
//! `live/{sensor}/{metric}` (QoS 0, every stored reading, unless the
//! collector's connection is full: then dropped and counted in
//! `FeedStats`).
//!
//! Two tasks on two connections: at 100k readings/s the live feed is 100k
//! publishes a second, and an alert queued behind them (on the same task or
//! the same connection) waited tens of milliseconds.

use std::collections::VecDeque;
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use shared::topics;
use tokio::sync::broadcast::error::RecvError;

use super::FeedStats;
use crate::cluster::speaker::{Speaking, WITHHELD_FOR};
use crate::messages::{AlertEvent, Bus, FeedEvent};

/// In a cluster, a collector that does not speak keeps the alert changes it
/// withholds for `WITHHELD_FOR`, and announces those made since the last
/// speaker's last renewal when it takes over (`crate::cluster::speaker`).
pub async fn alerts(bus: Bus, client: AsyncClient, mut speaking: Speaking) {
    let mut rx = bus.subscribe();
    let mut withheld: VecDeque<AlertEvent> = VecDeque::new();
    // Outside a cluster nobody changes the turn: its sender is gone.
    let mut watching = true;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(FeedEvent::Alert(ev)) => {
                    if speaking.borrow().speaking {
                        announce(&client, &ev).await;
                    } else {
                        let oldest = ev.alert.updated_ts_ms - WITHHELD_FOR.as_millis() as i64;
                        while withheld.front().is_some_and(|w| w.alert.updated_ts_ms < oldest) || withheld.len() >= WITHHELD_MAX {
                            withheld.pop_front();
                        }
                        withheld.push_back(ev);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => tracing::error!("MQTT alert feed fell behind and skipped {n} events (the alert store and SSE have them)"),
                Err(RecvError::Closed) => return,
            },
            changed = speaking.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let turn = *speaking.borrow_and_update();
                if turn.speaking {
                    let unheard: Vec<AlertEvent> = withheld.drain(..).filter(|w| w.alert.updated_ts_ms >= turn.from_ms).collect();
                    if !unheard.is_empty() {
                        tracing::info!(changes = unheard.len(), "announcing the alert changes nobody announced while the cluster had no speaker");
                    }
                    for ev in unheard {
                        announce(&client, &ev).await;
                    }
                }
            }
        }
    }
}

async fn announce(client: &AsyncClient, ev: &AlertEvent) {
    let topic = topics::alert(ev.alert.severity.as_str(), &ev.alert.sensor);
    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(ev).expect("alert serializes")).await {
        tracing::warn!("alert feed: {e}");
    }
}

/// Alert changes a collector that does not speak keeps, at most.
const WITHHELD_MAX: usize = 10_000;

pub async fn live(bus: Bus, client: AsyncClient, stats: Arc<FeedStats>, speaking: Speaking) {
    let mut rx = bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(FeedEvent::Readings(readings)) if speaking.borrow().speaking => {
                let mut dropped = 0;
                for r in readings.iter() {
                    let live = r.sample();
                    // Live values are a view, not a record: dropped when the link is busy, and counted.
                    if client.try_publish(topics::live(&r.sensor, &r.metric), QoS::AtMostOnce, false, serde_json::to_vec(&live).expect("live serializes")).is_err() {
                        dropped += 1;
                    }
                }
                if dropped > 0 {
                    FeedStats::add(&stats.mqtt_live_readings, dropped);
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                FeedStats::add(&stats.mqtt_live_batches, n);
                tracing::warn!("MQTT live feed fell behind and skipped {n} events");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use rumqttc::MqttOptions;
    use shared::{Quality, Reading, Seq};

    use super::*;

    fn readings(n: u64) -> Arc<Vec<Reading>> {
        Arc::new((0..n).map(|i| Reading { seq: Seq(i + 1), sensor: "aq-001".into(), metric: "pm25".into(), ts_ms: i as i64, value: 1.0, quality: Quality::Good }).collect())
    }

    #[tokio::test]
    async fn readings_a_stalled_connection_cannot_take_are_counted_as_dropped() {
        // A connection whose event loop is never polled: the broker link is
        // stalled, and its request queue (10) fills up.
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("live-test", "127.0.0.1", 1), 10);
        let bus = crate::messages::bus();
        let stats = Arc::new(FeedStats::default());
        let task = tokio::spawn(live(bus.clone(), client, stats.clone(), crate::cluster::speaker::always()));
        while bus.receiver_count() == 0 {
            tokio::task::yield_now().await;
        }
        bus.send(FeedEvent::Readings(readings(100))).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stats.mqtt_live_readings.load(Relaxed) < 90 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stats.mqtt_live_readings.load(Relaxed), 90, "10 fit the queue, 90 are dropped and counted");
        bus.send(FeedEvent::Readings(readings(5))).unwrap();
        while stats.mqtt_live_readings.load(Relaxed) < 95 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stats.mqtt_live_readings.load(Relaxed), 95, "the counter keeps rising while the consumer is stalled");
        task.abort();
    }
}
