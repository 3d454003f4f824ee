//! Fuzz target: arbitrary bytes read as a GoReplay file. Malformed records are skipped and counted; nothing
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let traffic = shadowdiff::traffic::gor::parse(bytes);
    for skipped in &traffic.skipped {
        let _ = skipped.to_string();
    }
});
