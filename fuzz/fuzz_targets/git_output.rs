//! What remote servers make git print: ref listings, `push --porcelain` reports and error
//! text. Every parser and classifier of it must cope with anything.
#![no_main]

use ferry::engine::git::summarize_stderr;
use ferry::engine::sync::parse_porcelain;
use ferry::model::kind::{classify_ref_rejection, classify_stderr};
use ferry::model::refs::{parse_ref_listing, RefSelection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_ref_listing(&text);
    let _ = RefSelection::default().parse(&text);
    for status in parse_porcelain(&text).values() {
        let _ = classify_ref_rejection(&status.summary);
    }
    let _ = classify_stderr(&text);
    let _ = summarize_stderr(&text);
});
