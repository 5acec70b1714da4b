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
//! the agent handed out must also be stored. A value stored twice is *duplicated*, and so is one
//! heard twice on the live MQTT feed or counted twice in
//! `citysense_readings_stored_total` (the store keys points by series and
//! time, so a reading written twice would not show there). Both must be zero.

pub mod harness;
pub mod powercut;
pub mod scenarios;

pub use harness::Report;
