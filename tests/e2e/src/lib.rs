//! Whole-system tests live in `tests/`: each runs real agents against the
//! simulated city and a collector, as a user would wire them. This library is
//! empty on purpose; the helpers are in `tests/common` and `citysense-test-support`.
