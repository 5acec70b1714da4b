//! Fault injection against real processes: the `citysense-agent`,
//! `citysense-collector` and `citysense-sim` binaries, and Mosquitto where a
//! scenario uses an external broker.
//!
//! Every scenario ends with the same accounting. The simulator logs each
//! counter value it serves (`SENSOR VALUE TS_MS`); the collector's store holds
//! what arrived. A served value missing from the store is *lost* unless it
//! falls in a documented window: read at most one flush interval (plus
//! scheduling slack) before a SIGKILL of the agent, or dropped by the
//! `when_full` policy and reported as such. A value stored twice is
//! *duplicated*. Both must be zero.

pub mod harness;
pub mod scenarios;

pub use harness::Report;
