//! ferry keeps Git repositories synchronized. See ARCHITECTURE.md for the map.
//!
//! The planning core ([`plan`], [`refs`], [`kind`]) is pure; [`git`], [`cache`] and [`record`]
//! are the I/O adapters; [`sync`] wires them together for one mirror; [`cli`] and [`config`]
//! turn user input into validated mirrors; [`report`] is what a run says it did.

pub mod cache;
pub mod cli;
pub mod config;
pub mod git;
pub mod kind;
pub mod lambda;
pub mod page;
pub mod plan;
pub mod record;
pub mod refs;
pub mod remote;
pub mod report;
pub mod serve;
pub mod status;
pub mod store;
pub mod sync;
pub mod webhook;
