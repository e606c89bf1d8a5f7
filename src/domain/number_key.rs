//! Keyed hashes: how numbers and session ids are stored and logged without being readable.
//!
//! The key comes from `SIGNAL_GATE_NUMBER_KEY`. Without it, a stolen database or log says
//! nothing about who registered: the hash of a number cannot be recomputed by trying every
//! number in a country. Each kind of value is hashed under its own label, so a session id can
//! never collide with a number.

use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use super::PhoneNumber;

type HmacSha256 = Hmac<Sha256>;

/// The secret under which numbers and session ids are hashed.
#[derive(Clone)]
pub struct NumberKey(SecretSlice<u8>);

/// A number's keyed hash: the key of every per-number row and budget.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NumberHash([u8; 32]);

/// A session id's keyed hash: session ids are bearer credentials upstream.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHash([u8; 32]);

impl NumberKey {
    pub fn new(secret: &str) -> NumberKey {
        NumberKey(SecretSlice::from(secret.as_bytes().to_vec()))
    }

    pub fn hash_number(&self, number: &PhoneNumber) -> NumberHash {
        NumberHash(self.digest(b"number", number.e164().as_bytes()))
    }

    pub fn hash_session(&self, session_id: &str) -> SessionHash {
        SessionHash(self.digest(b"session", session_id.as_bytes()))
    }

    /// A keyed hash of any other value (a number prefix, an address block) under its own label.
    pub fn hash_labelled(&self, label: &str, value: &str) -> [u8; 32] {
        self.digest(label.as_bytes(), value.as_bytes())
    }

    fn digest(&self, label: &[u8], value: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(label);
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for NumberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NumberKey([redacted])")
    }
}

impl NumberHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 16 bytes, as the key of in-memory budgets.
    pub fn limit_key(&self) -> u128 {
        let mut head = [0u8; 16];
        head.copy_from_slice(&self.0[..16]);
        u128::from_be_bytes(head)
    }

    /// Eight hex digits, enough to follow one number through the logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<NumberHash> {
        bytes.try_into().ok().map(NumberHash)
    }
}

impl fmt::Debug for NumberHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NumberHash({})", self.short())
    }
}

impl SessionHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHash({})", hex::encode(&self.0[..4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_the_key_and_hide_the_number() {
        let number = PhoneNumber::parse("+447400123456").expect("valid");
        let one = NumberKey::new("first key of thirty-two characters!!");
        let two = NumberKey::new("second key of thirty-two characters!");
        assert_eq!(one.hash_number(&number), one.hash_number(&number));
        assert_ne!(one.hash_number(&number), two.hash_number(&number));
        assert_ne!(
            one.hash_number(&number).0,
            one.hash_session(number.e164()).0
        );
        let shown = format!("{:?} {:?}", one.hash_number(&number), one);
        assert!(!shown.contains("7400123456") && !shown.contains("thirty"));
    }
}
