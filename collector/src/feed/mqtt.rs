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
            turn = turn_changed(&mut speaking) => {
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

/// The turn once it changes; never, when nobody will change it any more
/// (outside a cluster, where its sender is gone from the start).
async fn turn_changed(speaking: &mut Speaking) -> crate::cluster::speaker::Turn {
    if speaking.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    *speaking.borrow_and_update()
}

async fn announce(client: &AsyncClient, ev: &AlertEvent) {
    let topic = topics::alert(ev.alert.severity.as_str(), &ev.alert.sensor);
    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(ev).expect("alert serializes")).await {
        tracing::warn!("alert feed: {e}");
    }
}

/// Alert changes a collector that does not speak keeps, at most.
const WITHHELD_MAX: usize = 10_000;

/// How long a collector that does not speak keeps the readings it would
/// have put on the live feed: the gap between the speaker's last renewal
/// seen and a takeover is at most the lease and one renewal.
const LIVE_WITHHELD_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// How far before the last renewal seen a new speaker goes back.
const LIVE_OVERLAP_MS: i64 = 2_000;

/// In a cluster, a collector that does not speak keeps the readings of the
/// last `LIVE_WITHHELD_FOR` (at most that many seconds of `rate`), and when
/// it takes over puts those stored since the last speaker's last renewal on
/// the feed: the readings stored while the cluster had no speaker are heard
/// too, once the new speaker speaks (those of the dead speaker's last
/// seconds may be heard twice).
pub async fn live(bus: Bus, client: AsyncClient, rate: u32, stats: Arc<FeedStats>, mut speaking: Speaking) {
    let mut rx = bus.subscribe();
    let mut budget = Budget::new(rate);
    let mut withheld: VecDeque<(i64, Arc<Vec<shared::Reading>>)> = VecDeque::new();
    let (mut held, most) = (0usize, rate as usize * LIVE_WITHHELD_FOR.as_secs() as usize);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(FeedEvent::Readings(readings)) if speaking.borrow().speaking => publish(&client, &readings, &mut budget, &stats),
                Ok(FeedEvent::Readings(readings)) => {
                    let now = shared::now_ms();
                    let oldest = now - LIVE_WITHHELD_FOR.as_millis() as i64;
                    held += readings.len();
                    withheld.push_back((now, readings));
                    while withheld.front().is_some_and(|(at, _)| *at < oldest) || held > most {
                        held -= withheld.pop_front().map_or(0, |(_, r)| r.len());
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    FeedStats::add(&stats.mqtt_live_batches, n);
                    tracing::warn!("MQTT live feed fell behind and skipped {n} events");
                }
                Err(RecvError::Closed) => return,
            },
            turn = turn_changed(&mut speaking) => {
                if turn.speaking {
                    // From a little before the last renewal seen: the old speaker may
                    // have stored a reading before this collector did and died before
                    // putting it out. A view, not a record: twice is better than never.
                    let from = turn.from_ms.saturating_sub(LIVE_OVERLAP_MS);
                    let unheard: Vec<_> = withheld.drain(..).filter(|(at, _)| *at >= from).map(|(_, r)| r).collect();
                    if !unheard.is_empty() {
                        tracing::info!(readings = unheard.iter().map(|r| r.len()).sum::<usize>(), "putting the readings stored while the cluster had no speaker on the live feed");
                    }
                    for readings in unheard {
                        publish(&client, &readings, &mut budget, &stats);
                    }
                    held = 0;
                }
            }
        }
    }
}

/// Puts `readings` on the live feed, within `budget`; what it leaves out or
/// the connection cannot take is counted.
fn publish(client: &AsyncClient, readings: &[shared::Reading], budget: &mut Budget, stats: &FeedStats) {
    let room = budget.take(readings.len(), std::time::Instant::now());
    if room < readings.len() {
        FeedStats::add(&stats.mqtt_live_over_rate, (readings.len() - room) as u64);
    }
    let mut dropped = 0;
    for (i, r) in spread(readings, room, budget.phase()).enumerate() {
        let live = r.sample();
        // Live values are a view, not a record: dropped when the link is busy, and counted.
        if client.try_publish(topics::live(&r.sensor, &r.metric), QoS::AtMostOnce, false, serde_json::to_vec(&live).expect("live serializes")).is_err() {
            // The connection's queue is full and will not drain
            // within this loop: the rest of the batch is dropped
            // unformatted, so an overloaded feed costs no more CPU.
            dropped += (room - i) as u64;
            break;
        }
    }
    if dropped > 0 {
        FeedStats::add(&stats.mqtt_live_readings, dropped);
    }
}

/// A token bucket of `rate` readings a second holding one second's worth.
struct Budget {
    rate: f64,
    tokens: f64,
    at: Option<std::time::Instant>,
    phase: u64,
}

impl Budget {
    fn new(rate: u32) -> Budget {
        Budget { rate: rate as f64, tokens: rate as f64, at: None, phase: 0 }
    }

    /// A new offset for `spread` each batch (a Weyl sequence): batches of a
    /// gateway repeat its sensors in the same order, and a fixed stride
    /// would pick the same sensors every time.
    fn phase(&mut self) -> u64 {
        self.phase = self.phase.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.phase
    }

    /// How many of `n` readings may go out at `now`.
    fn take(&mut self, n: usize, now: std::time::Instant) -> usize {
        let elapsed = self.at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = Some(now);
        let room = (self.tokens.floor().max(0.0) as usize).min(n);
        self.tokens -= room as f64;
        room
    }
}

/// `room` of `readings`, spread evenly across them from an offset set by
/// `phase`: a feed at its rate still shows every part of the city over a
/// few batches, not the first sensors of each.
fn spread(readings: &[shared::Reading], room: usize, phase: u64) -> impl Iterator<Item = &shared::Reading> {
    let n = readings.len();
    let offset = if n == 0 { 0 } else { (phase % n as u64) as usize };
    // Position j (counted from the offset) goes out when it moves floor(j * room / n) up by one.
    (0..n).filter(move |j| room > 0 && (j * room / n) != ((j + 1) * room / n)).map(move |j| &readings[(j + offset) % n])
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
        let task = tokio::spawn(live(bus.clone(), client, 1_000_000, stats.clone(), crate::cluster::speaker::always()));
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

    #[test]
    fn the_feed_budget_is_its_rate_a_second_with_a_second_in_hand() {
        let t0 = std::time::Instant::now();
        let mut b = Budget::new(1_000);
        assert_eq!(b.take(600, t0), 600);
        assert_eq!(b.take(600, t0), 400, "a second's worth in hand, no more");
        assert_eq!(b.take(600, t0 + Duration::from_millis(250)), 250);
        assert_eq!(b.take(10_000, t0 + Duration::from_secs(60)), 1_000, "idle time saves up one second, not a minute");
        assert_eq!(Budget::new(0).take(5, t0), 0);
    }

    #[test]
    fn readings_within_the_rate_are_spread_across_the_batch() {
        let rs = readings(100);
        let ts = |room, phase| spread(&rs, room, phase).map(|r| r.ts_ms).collect::<Vec<_>>();
        assert_eq!(ts(100, 7).len(), 100);
        assert_eq!(ts(0, 7), Vec::<i64>::new());
        assert_eq!(ts(4, 0), vec![24, 49, 74, 99]);
        assert_eq!(ts(4, 1), vec![25, 50, 75, 0]);
        assert_eq!(ts(33, 5).len(), 33);
        // Batches that repeat the same sensors in the same order: the phase
        // moves, so every position of the batch has its turn.
        let mut b = Budget::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            seen.extend(ts(4, b.phase()));
        }
        assert_eq!(seen.len(), 100);
    }

    #[tokio::test]
    async fn readings_past_the_live_rate_are_left_out_and_counted_apart_from_a_slow_consumer() {
        // A live subscriber on the collector's embedded broker sees the
        // readings within the rate and no more; the rest are counted.
        let addr = crate::mqtt::broker::start_embedded_async("127.0.0.1:0".parse().unwrap(), 1 << 20, None).await.unwrap();
        let (client, mut el) = AsyncClient::new(MqttOptions::new("citysense-collector-live-test", addr.ip().to_string(), addr.port()), 4096);
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        let (sub, mut sub_el) = AsyncClient::new(MqttOptions::new("screen", addr.ip().to_string(), addr.port()), 16);
        sub.subscribe("citysense/v1/live/#", QoS::AtMostOnce).await.unwrap();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(ev) = sub_el.poll().await {
                match ev {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => seen_tx.send(None).unwrap(),
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => seen_tx.send(Some(p.topic)).unwrap(),
                    _ => {}
                }
            }
        });
        assert_eq!(seen.recv().await.unwrap(), None, "subscribed");
        let bus = crate::messages::bus();
        let stats = Arc::new(FeedStats::default());
        let task = tokio::spawn(live(bus.clone(), client, 50, stats.clone(), crate::cluster::speaker::always()));
        while bus.receiver_count() == 0 {
            tokio::task::yield_now().await;
        }
        let many: Vec<Reading> = (0..1_000u64)
            .map(|i| Reading { seq: Seq(i + 1), sensor: format!("aq-{i:04}").into(), metric: "pm25".into(), ts_ms: i as i64, value: 1.0, quality: Quality::Good })
            .collect();
        bus.send(FeedEvent::Readings(Arc::new(many))).unwrap();
        let mut topics = Vec::new();
        while topics.len() < 50 {
            topics.push(tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.expect("within the rate arrives").unwrap().unwrap());
        }
        assert_eq!(stats.mqtt_live_over_rate.load(Relaxed), 950);
        assert_eq!(stats.mqtt_live_readings.load(Relaxed), 0, "none lost to a slow consumer");
        let late = topics.iter().filter(|t| t.as_str() >= "citysense/v1/live/aq-0500").count();
        assert!((20..=30).contains(&late), "spread over the batch, not its first 50 readings: {late} of 50 from its second half");
        task.abort();
    }
}
