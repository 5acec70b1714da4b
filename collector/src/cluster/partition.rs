//! The batch log split by gateway. The log stream rewrites each batch's
//! subject `citysense.v1.up.<gateway>` to `citysense.v1.up.<p>.<gateway>` as
//! it stores it (a subject transform with NATS's `partition(N, 1)`), so a
//! consumer filtered on `citysense.v1.up.<p>.*` reads exactly partition `p`,
//! in log order. The collector computes the same function itself (`of`) for
//! what does not come through the log: a gateway's state and health, and the
//! sensors of a partition it holds.

use async_nats::jetstream::stream::SubjectTransform;

/// NATS's name for the MQTT topics `citysense/v1/up/+`: what the log takes.
pub const SUBJECTS: &str = "citysense.v1.up.*";
/// The most partitions a log may have: far more than collectors a city runs.
pub const MAX: u32 = 1024;
const PREFIX: &str = "citysense.v1.up.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions(u32);

impl Partitions {
    /// `n` ≥ 1.
    pub fn new(n: u32) -> Partitions {
        assert!((1..=MAX).contains(&n), "validated: 1 to {MAX} partitions");
        Partitions(n)
    }

    pub fn count(self) -> u32 {
        self.0
    }

    /// The partition of `gateway`, as the server's `partition(N, 1)` puts it:
    /// FNV-1a (32 bits) of the id, modulo N.
    pub fn of(self, gateway: &str) -> u32 {
        fnv1a(gateway) % self.0
    }

    /// What the log stream does to each batch's subject as it stores it.
    pub fn transform(self) -> SubjectTransform {
        SubjectTransform { source: SUBJECTS.into(), destination: format!("{PREFIX}{{{{partition({},1)}}}}.{{{{wildcard(1)}}}}", self.0) }
    }

    /// The subjects of partition `p` in the log.
    pub fn filter(p: u32) -> String {
        format!("{PREFIX}{p}.*")
    }

    /// The count a stream's transform splits the log into; `None` when it is not split.
    pub fn of_transform(t: Option<&SubjectTransform>) -> Option<u32> {
        let dest = &t?.destination;
        dest.strip_prefix(PREFIX)?.strip_prefix("{{partition(")?.split(',').next()?.trim().parse().ok()
    }
}

/// FNV-1a, 32 bits: NATS's hash for `partition()`.
pub(crate) fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The gateway a logged batch's subject names, split or not.
pub fn gateway_of(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(PREFIX)?;
    let gateway = rest.split_once('.').map_or(rest, |(_, g)| g);
    (!gateway.is_empty()).then_some(gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_falls_in_the_partition_the_server_gives_it() {
        // What nats-server 2.15.1 stored these under with `partition(12,1)`
        // (`tests/e2e/tests/nats_failover.rs` checks it against a live server).
        let p = Partitions::new(12);
        for (gw, at) in [("gw-0", 10), ("gw-1", 9), ("gw-river", 0), ("a", 4), ("b", 1)] {
            assert_eq!(p.of(gw), at, "{gw}");
        }
        assert_eq!(Partitions::new(1).of("anything"), 0);
    }

    #[test]
    fn the_transform_names_its_count_and_subjects_name_their_gateway() {
        let t = Partitions::new(12).transform();
        assert_eq!(t.destination, "citysense.v1.up.{{partition(12,1)}}.{{wildcard(1)}}");
        assert_eq!(Partitions::of_transform(Some(&t)), Some(12));
        assert_eq!(Partitions::of_transform(None), None);
        assert_eq!(Partitions::filter(3), "citysense.v1.up.3.*");
        assert_eq!(gateway_of("citysense.v1.up.3.gw-river"), Some("gw-river"));
        assert_eq!(gateway_of("citysense.v1.up.gw-river"), Some("gw-river"));
        assert_eq!(gateway_of("citysense.v1.up."), None);
        assert_eq!(gateway_of("citysense.v1.down.gw"), None);
    }
}
