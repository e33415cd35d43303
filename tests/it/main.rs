//! ferry's integration tests: the real binary against real git servers on loopback.

mod failures;
mod harness;
mod lifecycle;
mod policies;
