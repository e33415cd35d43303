//! A configuration file: whatever text, `Config::parse` says what is wrong or returns a
//! validated config; it never panics.
#![no_main]

use ferry::config::{Config, RawOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, Path::new("/fuzz/ferry.toml"), &RawOptions::default());
    }
});
