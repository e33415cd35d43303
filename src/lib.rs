//! ferry keeps Git repositories synchronized. See ARCHITECTURE.md for the map.
//!
//! The folders follow the flow, and dependencies point one way:
//!
//! ```text
//! app ──> service ──> engine ──> model
//!  │         ├──────> intake ──> model
//!  │         └──────> config ──> model
//!  ├──> aws ──> engine, model
//!  └──> engine, intake, config, model
//! ```
//!
//! [`model`] is the vocabulary; [`config`] turns files and the environment into it; [`intake`]
//! authenticates and classifies what arrives from outside; [`engine`] runs one mirror once;
//! [`service`] is the always-on queue around the engine; [`aws`] holds what the Lambda front end
//! needs of AWS (records in S3, secrets); [`app`] holds the front ends. The
//! `tidy` test enforces the arrows.

pub mod app;
#[cfg(feature = "aws")]
pub mod aws;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod intake;
pub mod model;
pub mod service;
