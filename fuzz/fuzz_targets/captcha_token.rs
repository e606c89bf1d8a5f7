#![no_main]
//! Any text is either a well-formed captcha token or refused; never a panic.

use libfuzzer_sys::fuzz_target;
use signal_gate::domain::CaptchaToken;

fuzz_target!(|text: &str| {
    if let Ok(token) = CaptchaToken::parse(text) {
        assert!(!token.response().is_empty());
        assert!(token.response().bytes().all(|b| b.is_ascii_graphic()));
    }
});
