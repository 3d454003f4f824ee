//! Fuzz target: arbitrary bytes read as a HAR file. Malformed entries are skipped and counted; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(traffic) = shadowdiff::traffic::har::parse(bytes) {
        for skipped in &traffic.skipped {
            let _ = skipped.to_string();
        }
    }
});
