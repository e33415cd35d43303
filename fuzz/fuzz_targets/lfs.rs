//! What Git LFS brings in from outside: pointer blobs (whoever pushed to the source wrote
//! them) and LFS servers' batch answers. Their parsers must cope with anything.
#![no_main]

use ferry::engine::lfs::batch::parse_batch_response;
use ferry::engine::lfs::pointer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = pointer::parse(data) {
        assert!(pointer::is_oid(&p.oid));
    }
    let _ = parse_batch_response(data);
});
