//! A webhook delivery as any client can send it: arbitrary headers and body, to a mirror with
//! or without a pinned provider. `receive` must answer (accept, ignore or reject) and never
//! panic, whatever arrives.
#![no_main]

use arbitrary::Arbitrary;
use ferry::intake::webhook::{receive, Expect, Request};
use ferry::model::provider::Provider;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    secret: String,
    pin: Option<u8>,
}

fuzz_target!(|d: Delivery| {
    let headers: Vec<(String, String)> = d
        .headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    let provider = d
        .pin
        .map(|i| Provider::ALL[usize::from(i) % Provider::ALL.len()]);
    let _ = receive(
        &Request {
            headers: &headers,
            body: &d.body,
        },
        Expect {
            secret: &d.secret,
            provider,
        },
    );
});
