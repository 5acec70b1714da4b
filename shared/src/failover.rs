//! Several brokers for one link. A client that loses, or cannot reach, the
//! broker it is on moves to the next in the list at once, so the death of one
//! cluster node costs a reconnect, not an outage; only when every broker of a
//! round has failed does the caller back off. After a failover the client stays
//! where it landed: moving back to the first broker would cost a second
//! reconnect and buy nothing, since every node serves the same topics.

/// A non-empty list of places to connect to and which one is in use.
#[derive(Debug, Clone)]
pub struct Failover<T> {
    list: Vec<T>,
    at: usize,
    /// Failures since the last successful connection.
    failures: usize,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another broker of this round is untried: connect to it now.
    TryNext,
    /// Every broker has failed since the last success: wait before the next round.
    BackOff,
}

impl<T> Failover<T> {
    /// None for an empty list: a link needs somewhere to go.
    pub fn new(list: Vec<T>) -> Option<Failover<T>> {
        (!list.is_empty()).then_some(Failover { list, at: 0, failures: 0 })
    }

    pub fn current(&self) -> &T {
        &self.list[self.at]
    }

    pub fn all(&self) -> &[T] {
        &self.list
    }

    /// The link to `current` is up.
    pub fn connected(&mut self) {
        self.failures = 0;
    }

    /// The link to `current` failed (or never came up): `current` becomes the next broker.
    pub fn failed(&mut self) -> Next {
        self.failures += 1;
        self.at = (self.at + 1) % self.list.len();
        if self.failures.is_multiple_of(self.list.len()) {
            Next::BackOff
        } else {
            Next::TryNext
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_broker_backs_off_after_every_failure() {
        let mut f = Failover::new(vec!["a"]).unwrap();
        assert_eq!(f.failed(), Next::BackOff);
        assert_eq!(f.failed(), Next::BackOff);
        assert_eq!(*f.current(), "a");
    }

    #[test]
    fn tries_every_broker_once_before_backing_off_and_stays_where_it_landed() {
        let mut f = Failover::new(vec!["a", "b", "c"]).unwrap();
        assert_eq!((f.failed(), *f.current()), (Next::TryNext, "b"));
        assert_eq!((f.failed(), *f.current()), (Next::TryNext, "c"));
        assert_eq!((f.failed(), *f.current()), (Next::BackOff, "a"));
        assert_eq!((f.failed(), *f.current()), (Next::TryNext, "b"));
        f.connected();
        // A later loss of "b" starts a fresh round from there.
        assert_eq!((f.failed(), *f.current()), (Next::TryNext, "c"));
        assert_eq!((f.failed(), *f.current()), (Next::TryNext, "a"));
        assert_eq!((f.failed(), *f.current()), (Next::BackOff, "b"));
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(Failover::<&str>::new(vec![]).is_none());
    }
}
