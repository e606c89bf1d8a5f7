#![no_main]
//! Any text is either one canonical number, which parses back to itself, or refused.

use libfuzzer_sys::fuzz_target;
use signal_gate::domain::PhoneNumber;

fuzz_target!(|text: &str| {
    if let Ok(number) = PhoneNumber::parse(text) {
        let again = PhoneNumber::parse(number.e164()).expect("the canonical form is valid");
        assert_eq!(again.e164(), number.e164());
    }
});
