//! Fuzz target: arbitrary text read as a rules file, and each rule it holds applied to a few paths. A bad file
//! is an error naming its line; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowdiff::analysis::rules::RuleSet;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match RuleSet::parse(text, "fuzz.toml") {
        Ok(rules) => {
            for endpoint in ["GET /users/{id}", "POST /a/b/c", ""] {
                let for_endpoint = rules.for_endpoint(endpoint);
                for path in ["body/a/0/b", "header/x", "status", ""] {
                    let _ = for_endpoint.verdict_override(path);
                }
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
