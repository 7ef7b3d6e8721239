//! The PromQL check of a plan's queries: never a panic or a stack overflow, for any query the
//! schema lets through (at most 4096 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    if query.len() <= 4096 {
        let _ = fulfillment_operator::plan::query_problem(query);
    }
});
