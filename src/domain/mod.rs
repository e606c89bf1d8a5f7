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

/// Longest session id taken from a client or from signal-server.
pub const MAX_SESSION_ID_CHARS: usize = 256;

/// Whether `id` looks like a signal-server session id: URL-safe base64 with padding, of a
/// bounded length. The gate checks the ids clients send and the ids signal-server answers with.
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SESSION_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b))
}
