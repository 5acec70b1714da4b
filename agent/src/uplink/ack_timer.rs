//! How long the uplink waits for an ack before sending again: TCP's
//! retransmission timer (RFC 6298) over the collector's acks. A collector
//! that works through a long queue acks each batch seconds after it was sent;
//! a fixed `ack_timeout` shorter than that resent every batch of a thousand
//! gateways, and the resends, added to the queue, made it longer still (the
//! paced 500k/s run held 105k/s with 21,848 batches resent). So the wait is
//! `ack_timeout` at the least, or the measured ack time plus four times its
//! variation when that is longer, and it doubles after each timeout until an
//! ack is measured again, never beyond `CEILING` times `ack_timeout`. Pure:
//! durations in, durations out.

use std::time::Duration;

/// The longest wait, in `ack_timeout`s: a collector back after an outage
/// without the link dropping (a reconnect resends at once) is sent to again
/// within this.
pub const CEILING: u32 = 6;

#[derive(Debug, Clone)]
pub struct AckTimer {
    floor: Duration,
    /// Smoothed ack time and its variation; none before the first ack measured.
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Timeouts since the last ack measured: each doubles the wait.
    backoff: u32,
}

impl AckTimer {
    pub fn new(ack_timeout: Duration) -> AckTimer {
        AckTimer { floor: ack_timeout, srtt: None, rttvar: Duration::ZERO, backoff: 0 }
    }

    fn ceiling(&self) -> Duration {
        self.floor * CEILING
    }

    /// How long to wait for the next ack.
    pub fn timeout(&self) -> Duration {
        let measured = self.srtt.map_or(Duration::ZERO, |s| s + 4 * self.rttvar);
        let base = measured.max(self.floor).min(self.ceiling());
        base.saturating_mul(1 << self.backoff.min(CEILING)).min(self.ceiling())
    }

    /// An ack came `rtt` after its batch was due (sent, or next in line):
    /// never a batch sent more than once, whose ack may answer either sending.
    pub fn measured(&mut self, rtt: Duration) {
        self.backoff = 0;
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
    }

    /// No ack within `timeout()`: wait twice as long next time.
    pub fn timed_out(&mut self) {
        self.backoff = (self.backoff + 1).min(CEILING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn fast_acks_leave_the_configured_timeout() {
        let mut t = AckTimer::new(10 * S);
        assert_eq!(t.timeout(), 10 * S, "nothing measured yet");
        for _ in 0..20 {
            t.measured(Duration::from_millis(40));
        }
        assert_eq!(t.timeout(), 10 * S);
    }

    #[test]
    fn slow_steady_acks_are_waited_for_longer_than_they_take() {
        let mut t = AckTimer::new(10 * S);
        t.measured(9 * S);
        assert_eq!(t.timeout(), 27 * S, "first measure: 9 s + 4 × 4.5 s");
        for _ in 0..50 {
            t.measured(9 * S);
        }
        assert_eq!(t.timeout(), 10 * S, "steady 9 s acks: the configured timeout is longer");
        // Acks between 6 and 12 s apart (a queue, upkeep pauses): waited for.
        for i in 0..50 {
            t.measured(if i % 2 == 0 { 6 * S } else { 12 * S });
        }
        let wait = t.timeout();
        assert!(wait > 18 * S && wait < 24 * S, "{wait:?}");
    }

    #[test]
    fn each_timeout_doubles_the_wait_up_to_the_ceiling_and_an_ack_ends_the_backoff() {
        let mut t = AckTimer::new(10 * S);
        let mut waits = vec![t.timeout()];
        for _ in 0..5 {
            t.timed_out();
            waits.push(t.timeout());
        }
        assert_eq!(waits, [10 * S, 20 * S, 40 * S, 60 * S, 60 * S, 60 * S]);
        t.measured(Duration::from_millis(50));
        assert_eq!(t.timeout(), 10 * S);
    }
}
