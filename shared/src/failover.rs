//! Several brokers for one link. A client that loses, or cannot reach, the
//! broker it is on moves to the next in the list at once, so the death of one
//! cluster node costs a reconnect, not an outage; only when every broker of a
//! round has failed does it wait, 0.1 s at first and doubling to 5 s, until
//! a connection succeeds. After a failover the client stays where it landed:
//! moving back to the first broker would cost a second reconnect and buy
//! nothing, since every node serves the same topics.

use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A non-empty list of places to connect to, which one is in use, and how
/// long to wait before the next attempt.
#[derive(Debug, Clone)]
pub struct Failover<T> {
    list: Vec<T>,
    at: usize,
    /// Failures since the last successful connection.
    failures: usize,
    backoff: Duration,
}

impl<T> Failover<T> {
    /// None for an empty list: a link needs somewhere to go.
    pub fn new(list: Vec<T>) -> Option<Failover<T>> {
        (!list.is_empty()).then_some(Failover { list, at: 0, failures: 0, backoff: FIRST_BACKOFF })
    }

    pub fn current(&self) -> &T {
        &self.list[self.at]
    }

    /// The link to `current` is up.
    pub fn connected(&mut self) {
        self.failures = 0;
        self.backoff = FIRST_BACKOFF;
    }

    /// The link to `current` failed (or never came up): `current` becomes the
    /// next broker, and the answer is how long to wait before connecting to
    /// it: nothing while this round has untried brokers, the backoff once all
    /// of them failed.
    pub fn failed(&mut self) -> Duration {
        self.failures += 1;
        self.at = (self.at + 1) % self.list.len();
        if !self.failures.is_multiple_of(self.list.len()) {
            return Duration::ZERO;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_broker_backs_off_after_every_failure_doubling_to_five_seconds() {
        let mut f = Failover::new(vec!["a"]).unwrap();
        let waits: Vec<Duration> = (0..8).map(|_| f.failed()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200), ms(5000), ms(5000)]);
        assert_eq!(*f.current(), "a");
        f.connected();
        assert_eq!(f.failed(), ms(100));
    }

    #[test]
    fn tries_every_broker_once_before_backing_off_and_stays_where_it_landed() {
        let mut f = Failover::new(vec!["a", "b", "c"]).unwrap();
        assert_eq!((f.failed(), *f.current()), (NOW, "b"));
        assert_eq!((f.failed(), *f.current()), (NOW, "c"));
        assert_eq!((f.failed(), *f.current()), (ms(100), "a"));
        assert_eq!((f.failed(), *f.current()), (NOW, "b"));
        f.connected();
        // A later loss of "b" starts a fresh round from there, with a fresh backoff.
        assert_eq!((f.failed(), *f.current()), (NOW, "c"));
        assert_eq!((f.failed(), *f.current()), (NOW, "a"));
        assert_eq!((f.failed(), *f.current()), (ms(100), "b"));
        assert_eq!((f.failed(), *f.current()), (NOW, "c"));
        assert_eq!((f.failed(), *f.current()), (NOW, "a"));
        assert_eq!((f.failed(), *f.current()), (ms(200), "b"));
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(Failover::<&str>::new(vec![]).is_none());
    }
}
