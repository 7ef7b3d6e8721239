//! Prometheus API answers → readings: never a panic, whatever the server sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fulfillment_operator::prometheus::parse_instant("q", data);
    let _ = fulfillment_operator::prometheus::parse_range("q", data);
});
