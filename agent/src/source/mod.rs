//! Where readings come from: Modbus devices polled on a schedule and MQTT
//! sensors that publish JSON. Every source hands `NewReading`s to the intake,
//! which gives them a `seq` and puts them in the outbox.

pub mod modbus;
pub mod mqtt;
pub mod timestamp;

use shared::Quality;

/// A reading before the outbox has given it a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReading {
    pub sensor: String,
    pub metric: String,
    pub ts_ms: i64,
    pub value: f64,
    pub quality: Quality,
}

/// A poll's readings on their way to the intake, and where the intake says
/// which seqs they got (`None`: refused, the outbox being full under
/// `stop_polling`).
#[derive(Debug)]
pub struct Handed {
    pub readings: Vec<NewReading>,
    pub reply: tokio::sync::oneshot::Sender<Option<u64>>,
}

/// What became of readings handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// In the outbox and durable: a crash from now on loses none of them.
    Durable,
    /// Refused: the outbox is full and `buffer.when_full = "stop_polling"`.
    Refused,
}

/// Where sources put their readings: the intake gives them seqs and the
/// outbox makes them durable. `take` returns only once they are durable, so a
/// source counts a poll only when a kill -9 or a power cut can no longer lose
/// it, and a disk that cannot keep up slows polling down instead of readings
/// piling up in memory.
#[derive(Clone)]
pub struct Sink {
    tx: tokio::sync::mpsc::Sender<Handed>,
    /// The highest durable seq (the outbox's flusher publishes it).
    durable: tokio::sync::watch::Receiver<u64>,
}

impl Sink {
    pub fn new(tx: tokio::sync::mpsc::Sender<Handed>, durable: tokio::sync::watch::Receiver<u64>) -> Sink {
        Sink { tx, durable }
    }

    /// Hands `readings` over and waits until they are durable (group commit:
    /// one fsync covers every source's readings that arrived meanwhile).
    /// `None` when the agent is stopping.
    pub async fn take(&self, readings: Vec<NewReading>) -> Option<Taken> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send(Handed { readings, reply }).await.ok()?;
        let Some(last_seq) = answer.await.ok()? else { return Some(Taken::Refused) };
        self.durable.clone().wait_for(|d| *d >= last_seq).await.ok()?;
        Some(Taken::Durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> NewReading {
        NewReading { sensor: "wl-01".into(), metric: "level".into(), ts_ms: 1, value: 1.0, quality: Quality::Good }
    }

    #[tokio::test]
    async fn take_returns_only_once_the_readings_seqs_are_durable() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let (durable_tx, durable) = tokio::sync::watch::channel(0u64);
        let sink = Sink::new(tx, durable);
        let mut taking = tokio::spawn(async move { sink.take(vec![reading(), reading()]).await });
        let handed = rx.recv().await.unwrap();
        assert_eq!(handed.readings.len(), 2);
        handed.reply.send(Some(12)).unwrap();
        durable_tx.send(11).unwrap();
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), &mut taking).await.is_err(), "seq 12 is not durable yet");
        durable_tx.send(12).unwrap();
        assert_eq!(taking.await.unwrap(), Some(Taken::Durable));
    }

    #[tokio::test]
    async fn refused_readings_are_not_waited_for_and_a_stopping_agent_ends_the_wait() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let (durable_tx, durable) = tokio::sync::watch::channel(0u64);
        let sink = Sink::new(tx, durable);
        let refused = tokio::spawn({
            let sink = sink.clone();
            async move { sink.take(vec![reading()]).await }
        });
        rx.recv().await.unwrap().reply.send(None).unwrap();
        assert_eq!(refused.await.unwrap(), Some(Taken::Refused));
        let waiting = tokio::spawn(async move { sink.take(vec![reading()]).await });
        rx.recv().await.unwrap().reply.send(Some(1)).unwrap();
        drop(durable_tx);
        assert_eq!(waiting.await.unwrap(), None, "no flusher left: the source stops instead of waiting forever");
    }
}
