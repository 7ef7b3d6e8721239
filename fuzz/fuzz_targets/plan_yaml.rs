//! Plan YAML → the whole validation (size, aliases, strict types, schema, names, CEL, PromQL):
//! never a panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fulfillment_operator::plan::parse(text);
    }
});
