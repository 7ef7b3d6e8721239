//! Go durations: never a panic; what parses prints back to text that parses to the same value.
#![no_main]

use fulfillment_operator::duration::{GoDuration, parse_go_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = parse_go_duration(text) {
        let printed = GoDuration::from(d).to_string();
        let again = parse_go_duration(&printed).expect("printed durations parse");
        assert_eq!(again, d, "{text:?} printed as {printed:?}");
    }
    let _ = text.parse::<GoDuration>();
});
