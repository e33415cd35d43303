//! The vocabulary every other room speaks: mirrors and their policies, refs and selections,
//! remotes and secrets, error kinds, triggers. Plain data and pure functions.
//!
//! Architecture invariant: `model` imports nothing else of the crate. Everything may import it.

pub mod fleet;
pub mod kind;
pub mod mirror;
pub mod provider;
pub mod refs;
pub mod remote;
