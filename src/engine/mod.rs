//! One run of one mirror: the pure planner ([`plan`]) wrapped by its adapters: the git process
//! runner ([`git`]), the bare cache ([`cache`]), its refs ([`ref_files`]) and its history
//! ([`ancestry`]), the sync records ([`record`]) and the Git LFS objects ([`lfs`]); [`sync`]
//! wires them together and [`report`] is what a run says it did.
//!
//! Architecture invariant: the engine imports only `model`. It knows nothing of the service,
//! the intake or the front ends; they call [`sync::run_mirror`] and read its report.

pub mod ancestry;
pub mod cache;
pub mod git;
pub mod lfs;
pub mod plan;
#[cfg(test)]
mod plan_props;
pub mod record;
mod ref_files;
pub mod report;
pub mod sync;
