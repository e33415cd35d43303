//! ferry's integration tests: the real binary against real git servers on loopback.

mod cli;
mod deploy;
mod failures;
mod harness;
mod http_face;
mod lambda;
mod lifecycle;
mod policies;
mod service;
