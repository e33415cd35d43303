//! ferry's integration tests: the real binary against real git servers on loopback.

mod cli;
mod deploy;
mod engine_trust;
mod failures;
mod harness;
mod lambda;
mod lifecycle;
mod policies;
mod service;
