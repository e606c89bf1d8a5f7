//! Validated types: untrusted input is parsed into these once, at the edge, and the rest of
//! the gate works with them only.

mod captcha_token;
mod client_address;
mod number_key;
mod phone_number;
mod request_path;

pub use captcha_token::{CaptchaToken, CaptchaTokenError};
pub use client_address::{ClientAddress, TrustedProxies};
pub use number_key::{NumberHash, NumberKey, SessionHash};
pub use phone_number::{NumberError, PhoneNumber};
pub use request_path::{canonical_path, is_verification_path, PathError};
