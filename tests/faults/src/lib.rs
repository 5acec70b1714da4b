//! Fault injection against real processes: the `citysense-agent`,
//! `citysense-collector` and `citysense-sim` binaries, and Mosquitto where a
//! scenario uses an external broker.
//!
//! Every scenario ends with the same accounting. The simulator logs each
//! counter value it serves (`SENSOR VALUE TS_MS`); the collector's store holds
//! what arrived. A served value missing from the store is *lost* unless it
//! falls in the documented window of an agent kill (a poll whose fsync had
//! not returned: counted exactly per kill from what the outbox held on
//! reopening, see `powercut`), or was dropped by the `when_full` policy and
//! reported as such, or was served to a read the agent abandoned (no answer
//! within its timeout; at most one counter value each, counted by the agent
//! as `abandoned_requests`). Wherever every reading is a counter, every seq
//! the agent handed out must also be stored. A value stored twice is
//! *duplicated*. Both must be zero.
//!
//! The store keys points by series and time, so a reading written twice
//! would not show there: `effects` counts what users see instead, and every
//! count must be zero: a counter value twice on the live MQTT feed
//! (`feed_dup`) or on SSE (`sse_dup`), `citysense_readings_stored_total`
//! off the distinct readings (`stored_total_mismatch`), a threshold crossing
//! of the alert ladder with two alerts (`alert_dup`) or two webhook changes
//! (`webhook_dup`: distinct `Idempotency-Key`s; the same key again is the
//! outbox's documented at-least-once, shown as `webhook_redelivered`), a
//! value twice in VictoriaMetrics (`vm_dup`, in `agent-sigkill`, whose
//! collector runs the InfluxDB sink throughout). Missing values are counted
//! where the harness can know exactly what must be there (`-` elsewhere).
//!
//! To see the harness catch a dedup bug, make the collector store again a
//! resent reading it already acknowledged: in `collector/src/ingest/dedup.rs`
//! (`Tracker::accept`) change `if seq <= self.contiguous || !self.above.insert(seq)`
//! to `if seq > self.contiguous && !self.above.insert(seq)`, rebuild, and run
//! `tests/faults/run agent-sigkill`: every restart of the agent resends what
//! was acked but whose deletion was not yet durable, and the line shows
//! `feed_dup`, `sse_dup`, `stored_total_mismatch` and `vm_dup` above zero
//! (while `duplicated` stays 0). A collector that forgets its open alerts on
//! restart (`store.alerts()?` filtered to closed ones in `rules_engine`,
//! `collector/src/collector.rs`) shows as `webhook_dup` in `collector-sigkill`.

pub mod effects;
pub mod harness;
pub mod powercut;
pub mod scenarios;

pub use harness::Report;
