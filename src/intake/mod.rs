//! What arrives from outside, authenticated and classified: push webhooks of every provider
//! ([`webhook`]) and AWS CodeCommit events ([`codecommit`]). Pure: bytes and JSON in, a
//! decision out; no I/O, no clock.
//!
//! Architecture invariant: `intake` imports only `model`. It decides whether a request is
//! authentic and what it asks for; what happens next is the caller's business.

pub mod codecommit;
pub mod webhook;
