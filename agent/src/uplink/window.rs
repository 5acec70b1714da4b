//! The uplink's in-flight window as a pure state machine: which seq goes next,
//! which batches are out and since when, what the collector has acknowledged.
//! It exists apart from the MQTT I/O (as rumqtt keeps protocol state apart
//! from links) so every rule of "nothing lost, nothing twice" on the sending
//! side is tested without a broker, a runtime or a clock: time is a parameter.
//!
//! Rules: only durable seqs are sent; at most `max_inflight` batches are out;
//! acks are cumulative (a duplicate or older one changes nothing); a batch
//! whose ack does not come within the ack timer's wait (`ack_timer`:
//! `ack_timeout`, longer when acks are measured to take longer, doubled after
//! each timeout) of its being sent or of the
//! batch before it being acknowledged, whichever is later, and everything
//! unacked when the link comes back, is sent again from the acked floor, in
//! order (the collector drops the duplicates). From the batch before: a
//! collector working through a queue acks batches in turn, and timing the
//! third of four from its own sending resent all four to a collector already
//! busy (a third of all batches, 1,000 gateways at capacity). Readings go as soon as they are durable
//! and the window has room, whatever their number: batching is not done on a
//! timer. Batches grow by themselves when the link is the bottleneck: while
//! the window is full, readings made durable pile up behind it and the next
//! slot carries up to `batch_max` of them. `linger` only applies behind a
//! full window: once the window has filled, a partial batch waits for
//! `batch_max` readings to be ready, for `linger` since the window filled, or
//! for the window to empty, whichever comes first, so a link kept busy sends
//! full batches; an idle or lightly loaded link adds no delay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ack_timer::AckTimer;

/// A batch sent and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub first: u64,
    pub last: u64,
    pub sent: Instant,
}

/// What the I/O side should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read up to `batch_max` readings with `from <= seq <= upto` and publish
    /// them; then report `sent` (or `nothing_held` when none were left).
    Send { from: u64, upto: u64 },
    /// The oldest batch waited `ack_timeout` for its ack: the window was
    /// emptied and sending starts again at `from`. Call `poll` again.
    AckTimedOut { from: u64 },
    /// Nothing to do until `until` or the next event (`None`: only an event).
    Wait { until: Option<Instant> },
}

#[derive(Debug, Clone)]
pub struct Window {
    batch_max: u64,
    linger: Duration,
    timer: AckTimer,
    max_inflight: usize,
    /// The next seq to send.
    cursor: u64,
    /// Every seq at or below it is acknowledged.
    acked: u64,
    /// The highest seq the outbox has made durable: nothing above it is sent.
    durable: u64,
    connected: bool,
    inflight: VecDeque<InFlight>,
    /// When the window last filled, while batches it held are still out:
    /// partial batches wait behind it for `linger` at most.
    full_since: Option<Instant>,
    /// When the oldest batch out became the oldest by an ack of the one
    /// before it; `head_moved`: an ack did that since the last `poll`,
    /// which takes its time as the ack's.
    head_since: Option<Instant>,
    head_moved: bool,
    /// When the batch an ack just released became due (sent, or next in
    /// line), measured against the ack's time at the next `poll`.
    released_since: Option<Instant>,
    /// Every seq at or below it has gone out more than once: an ack for it
    /// may answer either sending, so it is not measured (Karn's rule).
    resent_upto: u64,
}

impl Window {
    pub fn new(acked: u64, batch_max: usize, linger: Duration, ack_timeout: Duration, max_inflight: usize) -> Window {
        Window {
            batch_max: batch_max as u64,
            linger,
            timer: AckTimer::new(ack_timeout),
            max_inflight,
            cursor: acked + 1,
            acked,
            durable: 0,
            connected: false,
            inflight: VecDeque::new(),
            full_since: None,
            head_since: None,
            head_moved: false,
            released_since: None,
            resent_upto: 0,
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// How long the oldest batch out is waited for now.
    pub fn ack_timeout(&self) -> Duration {
        self.timer.timeout()
    }

    pub fn inflight(&self) -> impl Iterator<Item = &InFlight> {
        self.inflight.iter()
    }

    /// The outbox made everything up to `seq` durable.
    pub fn durable(&mut self, seq: u64) {
        self.durable = seq;
    }

    /// The collector acknowledged everything up to `upto`. Cumulative: an ack
    /// at or below the last one changes nothing. One beyond anything sent is
    /// believed too (the outbox has already deleted those readings), and
    /// sending goes on after it.
    pub fn ack(&mut self, upto: u64) {
        self.acked = self.acked.max(upto);
        while let Some(b) = self.inflight.front().filter(|b| b.last <= self.acked).copied() {
            self.inflight.pop_front();
            // Only the head is measured: the rest were released by the same ack, not waited for.
            if !self.head_moved && self.released_since.is_none() && b.first > self.resent_upto {
                self.released_since = Some(self.head_since.map_or(b.sent, |h| h.max(b.sent)));
            }
            self.head_moved = true;
        }
        if self.inflight.is_empty() {
            self.full_since = None;
        }
        self.cursor = self.cursor.max(self.acked + 1);
    }

    pub fn connected(&mut self, connected: bool) {
        self.connected = connected;
    }

    /// A new connection: whatever was in flight may be gone; start again after
    /// the last ack and let the collector drop duplicates.
    pub fn reconnected(&mut self) {
        self.resend_all();
    }

    fn resend_all(&mut self) {
        self.resent_upto = self.resent_upto.max(self.cursor.saturating_sub(1));
        self.released_since = None;
        self.inflight.clear();
        self.full_since = None;
        (self.head_since, self.head_moved) = (None, false);
        self.cursor = self.acked + 1;
    }

    /// A batch of `first..=last` went out at `now`.
    pub fn sent(&mut self, first: u64, last: u64, now: Instant) {
        self.inflight.push_back(InFlight { first, last, sent: now });
        self.cursor = last + 1;
        if !self.has_room() {
            self.full_since = Some(now);
        }
    }

    /// The outbox held nothing in `cursor..=upto` (acked or dropped meanwhile).
    pub fn nothing_held(&mut self, upto: u64) {
        self.cursor = upto + 1;
    }

    fn has_room(&self) -> bool {
        self.inflight.len() < self.max_inflight
    }

    /// When the oldest batch out times out, if one is out.
    fn ack_deadline(&self) -> Option<Instant> {
        let oldest = self.inflight.front()?;
        Some(self.head_since.map_or(oldest.sent, |h| h.max(oldest.sent)) + self.timer.timeout())
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Step {
        if std::mem::take(&mut self.head_moved) {
            self.head_since = Some(now);
            if let Some(since) = self.released_since.take() {
                self.timer.measured(now.saturating_duration_since(since));
            }
        }
        if self.ack_deadline().is_some_and(|d| now >= d) {
            self.timer.timed_out();
            self.resend_all();
            return Step::AckTimedOut { from: self.cursor };
        }
        let mut until: Option<Instant> = None;
        if self.connected && self.cursor <= self.durable && self.has_room() {
            let full_batch = self.durable - self.cursor + 1 >= self.batch_max;
            match self.full_since {
                Some(since) if !full_batch && now.saturating_duration_since(since) < self.linger => until = Some(since + self.linger),
                _ => return Step::Send { from: self.cursor, upto: self.durable },
            }
        }
        if let Some(timeout) = self.ack_deadline() {
            until = Some(until.map_or(timeout, |u| u.min(timeout)));
        }
        Step::Wait { until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(200);
    const ACK_TIMEOUT: Duration = Duration::from_secs(10);

    /// A connected window with `durable` readings ready, batches of 10, 3 in flight at most.
    fn window(durable: u64) -> (Window, Instant) {
        let mut w = Window::new(0, 10, LINGER, ACK_TIMEOUT, 3);
        w.connected(true);
        w.durable(durable);
        (w, Instant::now())
    }

    /// Polls once and, if told to send, sends a full batch (or up to `upto`).
    fn send_next(w: &mut Window, now: Instant) -> Option<(u64, u64)> {
        match w.poll(now) {
            Step::Send { from, upto } => {
                let last = upto.min(from + 9);
                w.sent(from, last, now);
                Some((from, last))
            }
            _ => None,
        }
    }

    fn ranges(w: &Window) -> Vec<(u64, u64)> {
        w.inflight().map(|b| (b.first, b.last)).collect()
    }

    #[test]
    fn full_batches_go_at_once_and_a_full_window_blocks_sending_until_an_ack() {
        let (mut w, t) = window(100);
        assert_eq!(send_next(&mut w, t), Some((1, 10)));
        assert_eq!(send_next(&mut w, t), Some((11, 20)));
        assert_eq!(send_next(&mut w, t), Some((21, 30)));
        // Full: the only deadline is the oldest batch's ack timeout, not linger.
        assert_eq!(w.poll(t + LINGER * 5), Step::Wait { until: Some(t + ACK_TIMEOUT) });
        w.ack(10);
        assert_eq!(send_next(&mut w, t + LINGER * 5), Some((31, 40)));
    }

    #[test]
    fn a_partial_batch_goes_as_soon_as_it_is_durable_while_the_window_has_room() {
        let (mut w, t) = window(5);
        assert_eq!(w.poll(t), Step::Send { from: 1, upto: 5 }, "nothing in flight: no linger");
        w.sent(1, 5, t);
        assert_eq!(w.poll(t), Step::Wait { until: Some(t + ACK_TIMEOUT) }, "nothing goes past the durable seq");
        w.durable(7);
        assert_eq!(w.poll(t), Step::Send { from: 6, upto: 7 }, "1..=5 in flight, but the window has room: 6..=7 go at once");
        w.sent(6, 7, t);
        w.durable(8);
        assert_eq!(w.poll(t), Step::Send { from: 8, upto: 8 });
    }

    #[test]
    fn behind_a_full_window_a_partial_batch_waits_for_linger_a_full_batch_or_an_empty_window() {
        let (mut w, t) = window(23);
        for _ in 0..3 {
            send_next(&mut w, t);
        }
        assert_eq!(ranges(&w), vec![(1, 10), (11, 20), (21, 23)], "each went at once: the window had room");
        w.durable(25);
        let later = t + LINGER / 4;
        assert_eq!(w.poll(later), Step::Wait { until: Some(t + ACK_TIMEOUT) }, "full: only an ack (or its timeout) lets a batch go");
        w.ack(10);
        assert_eq!(w.poll(later), Step::Wait { until: Some(t + LINGER) }, "the window filled at t: 24..=25 wait for more, linger at most");
        w.durable(33);
        assert_eq!(w.poll(later), Step::Send { from: 24, upto: 33 }, "a full batch goes at once");
        w.sent(24, 33, later);
        w.durable(35);
        w.ack(20);
        assert_eq!(w.poll(later), Step::Wait { until: Some(later + LINGER) }, "it filled again when 24..=33 went");
        assert_eq!(w.poll(later + LINGER), Step::Send { from: 34, upto: 35 }, "linger passed");
        w.sent(34, 35, later + LINGER);
        w.durable(37);
        w.ack(35);
        assert_eq!(w.poll(later + LINGER), Step::Send { from: 36, upto: 37 }, "the window emptied: what is ready goes at once");
    }

    #[test]
    fn nothing_is_sent_while_disconnected() {
        let (mut w, t) = window(100);
        w.connected(false);
        assert_eq!(w.poll(t + LINGER), Step::Wait { until: None });
        w.connected(true);
        assert_eq!(w.poll(t + LINGER), Step::Send { from: 1, upto: 100 });
    }

    #[test]
    fn an_ack_in_the_middle_of_the_window_releases_only_the_batches_it_covers() {
        let (mut w, t) = window(100);
        for _ in 0..3 {
            send_next(&mut w, t);
        }
        w.ack(15);
        assert_eq!(ranges(&w), vec![(11, 20), (21, 30)], "11..=20 is only partly acknowledged");
        assert_eq!(w.cursor(), 31);
        w.ack(20);
        assert_eq!(ranges(&w), vec![(21, 30)]);
        assert_eq!((w.acked(), w.cursor()), (20, 31));
    }

    #[test]
    fn duplicate_and_older_acks_change_nothing() {
        let (mut w, t) = window(100);
        send_next(&mut w, t);
        send_next(&mut w, t);
        w.ack(10);
        let before = (w.acked(), w.cursor(), ranges(&w));
        w.ack(10);
        w.ack(3);
        assert_eq!((w.acked(), w.cursor(), ranges(&w)), before);
    }

    #[test]
    fn an_ack_for_seqs_never_sent_is_believed_and_sending_goes_on_after_it() {
        let (mut w, t) = window(100);
        send_next(&mut w, t);
        w.ack(50);
        assert_eq!((w.acked(), w.cursor(), ranges(&w)), (50, 51, vec![]));
        assert_eq!(send_next(&mut w, t), Some((51, 60)));
    }

    #[test]
    fn no_ack_within_the_timeout_resends_from_the_acked_floor() {
        let (mut w, t) = window(20);
        send_next(&mut w, t);
        send_next(&mut w, t + Duration::from_secs(1));
        w.ack(4);
        assert_eq!(w.poll(t + ACK_TIMEOUT - Duration::from_millis(1)), Step::Wait { until: Some(t + ACK_TIMEOUT) });
        assert_eq!(w.poll(t + ACK_TIMEOUT), Step::AckTimedOut { from: 5 });
        assert_eq!(ranges(&w), vec![]);
        assert_eq!(send_next(&mut w, t + ACK_TIMEOUT), Some((5, 14)));
    }

    #[test]
    fn a_batch_queued_behind_others_is_timed_from_the_ack_of_the_one_before() {
        let (mut w, t) = window(30);
        for _ in 0..3 {
            send_next(&mut w, t);
        }
        let s = Duration::from_secs(1);
        // A busy collector acks the first after 8 s: the second is waited for from then,
        // and longer than 10 s, the ack time measured (8 s + 4 × its 4 s variation).
        w.ack(10);
        assert_eq!(w.poll(t + 8 * s), Step::Wait { until: Some(t + 32 * s) });
        assert_eq!(w.ack_timeout(), 24 * s);
        assert_eq!(w.poll(t + 20 * s), Step::Wait { until: Some(t + 32 * s) }, "not resent while the queue moves");
        w.ack(20);
        let wait = {
            let Step::Wait { until: Some(until) } = w.poll(t + 17 * s) else { panic!("a batch is out") };
            until - (t + 17 * s)
        };
        assert_eq!(wait, w.ack_timeout());
        // Then nothing: lost, or the collector stopped. Resent from the acked floor.
        assert_eq!(w.poll(t + 17 * s + wait), Step::AckTimedOut { from: 21 });
        let again = t + 17 * s + wait;
        assert_eq!(send_next(&mut w, again), Some((21, 30)));
        assert_eq!(w.poll(again + s), Step::Wait { until: Some(again + 2 * wait) }, "the batch resent is timed from its sending, twice as long");
    }

    #[test]
    fn a_collector_that_acks_nothing_gets_everything_resent_after_ack_timeout_then_less_and_less_often() {
        let (mut w, t) = window(10);
        send_next(&mut w, t);
        let mut now = t;
        let mut resent_at = Vec::new();
        for _ in 0..6 {
            let Step::Wait { until: Some(until) } = w.poll(now) else { panic!("a batch is out") };
            now = until;
            assert_eq!(w.poll(now), Step::AckTimedOut { from: 1 });
            resent_at.push((now - t).as_secs());
            assert_eq!(send_next(&mut w, now), Some((1, 10)));
        }
        assert_eq!(resent_at, [10, 30, 70, 130, 190, 250], "10 s, then doubling to 6 × ack_timeout");
        w.ack(10);
        w.durable(20);
        assert_eq!(send_next(&mut w, now), Some((11, 20)));
        assert_eq!(w.ack_timeout(), 6 * ACK_TIMEOUT, "an ack of a batch sent six times is not measured: it may answer any sending");
        w.ack(20);
        w.poll(now + Duration::from_secs(1));
        assert_eq!(w.ack_timeout(), ACK_TIMEOUT, "a batch sent once, acked in 1 s: the backoff ends");
    }

    #[test]
    fn a_reconnect_resends_everything_unacked_in_order() {
        let (mut w, t) = window(35);
        for _ in 0..3 {
            send_next(&mut w, t);
        }
        w.ack(10);
        w.connected(false);
        w.reconnected();
        w.connected(true);
        assert_eq!(ranges(&w), vec![]);
        let resent: Vec<(u64, u64)> = std::iter::from_fn(|| send_next(&mut w, t + LINGER)).collect();
        assert_eq!(resent, vec![(11, 20), (21, 30), (31, 35)]);
    }

    #[test]
    fn readings_gone_from_the_outbox_are_skipped() {
        let (mut w, t) = window(100);
        assert_eq!(w.poll(t), Step::Send { from: 1, upto: 100 });
        w.nothing_held(100);
        assert_eq!((w.cursor(), w.poll(t)), (101, Step::Wait { until: None }));
    }
}

/// The sending side's invariants under arbitrary interleavings of readings
/// made durable, acks (for seqs sent, as `acks::judge` lets through),
/// reconnects, timeouts and polls: nothing above the durable seq is sent,
/// batches in flight are in order and disjoint, the ack never goes back, and
/// once the link is quiet every durable reading has been sent and acked.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Durable(u64),
        /// Ack this share (0..=100 %) of what was sent.
        Ack(u8),
        Reconnect,
        Disconnect,
        Wait(u64),
        Poll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (1u64..40).prop_map(Op::Durable),
            2 => (0u8..=100).prop_map(Op::Ack),
            1 => Just(Op::Reconnect),
            1 => Just(Op::Disconnect),
            2 => (0u64..15_000).prop_map(Op::Wait),
            4 => Just(Op::Poll),
        ]
    }

    /// Polls once; sends what the window asks for (up to a batch).
    fn poll(w: &mut Window, now: Instant, durable: u64, sent_upto: &mut u64) -> Result<(), TestCaseError> {
        if let Step::Send { from, upto } = w.poll(now) {
            prop_assert!(upto <= durable, "asked to send up to {upto} with only {durable} durable");
            prop_assert!(from > w.acked(), "asked to resend acked seq {from}");
            let last = upto.min(from + 9);
            w.sent(from, last, now);
            *sent_upto = (*sent_upto).max(last);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn only_durable_seqs_go_out_in_order_and_all_are_acked_in_the_end(ops in proptest::collection::vec(op(), 0..80)) {
            let start = Instant::now();
            let mut now = start;
            let mut w = Window::new(0, 10, Duration::from_millis(200), Duration::from_secs(10), 3);
            let (mut durable, mut sent_upto, mut acked) = (0u64, 0u64, 0u64);
            w.connected(true);
            for op in ops {
                match op {
                    Op::Durable(k) => {
                        durable += k;
                        w.durable(durable);
                    }
                    Op::Ack(share) => {
                        let upto = acked.max(sent_upto * share as u64 / 100);
                        w.ack(upto);
                        acked = upto;
                    }
                    Op::Reconnect => {
                        w.connected(true);
                        w.reconnected();
                    }
                    Op::Disconnect => w.connected(false),
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                    Op::Poll => poll(&mut w, now, durable, &mut sent_upto)?,
                }
                prop_assert_eq!(w.acked(), acked);
                let inflight: Vec<InFlight> = w.inflight().copied().collect();
                prop_assert!(inflight.windows(2).all(|p| p[0].last < p[1].first), "batches in flight overlap or go back: {:?}", inflight);
                prop_assert!(inflight.iter().all(|b| b.last > acked && b.last <= durable), "a batch in flight is acked whole or beyond the durable seq");
            }
            // The link settles: connected, and every batch acked when it lands.
            w.connected(true);
            w.reconnected();
            for _ in 0..1_000 {
                now += Duration::from_millis(250);
                poll(&mut w, now, durable, &mut sent_upto)?;
                w.ack(sent_upto);
                acked = sent_upto;
                if acked == durable {
                    break;
                }
            }
            prop_assert_eq!(acked, durable, "durable readings never sent");
        }
    }
}
