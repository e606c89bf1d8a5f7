//! The captcha a client hands in: a raw hCaptcha response token, or Signal's own form
//! `signal-hcaptcha.<sitekey>.registration.<token>`, optionally behind `signalcaptcha://`.
//!
//! The token itself is held as a secret: it is a one-time credential and never appears in logs
//! or `Debug` output. Signal's `-short` schemes (a short code that signal-server would resolve
//! over HTTP) are not supported and are refused as malformed.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// Longest token accepted; hCaptcha's tokens are a few kilobytes at most.
const MAX_TOKEN_BYTES: usize = 4096;
const SIGNAL_SCHEME: &str = "signal-hcaptcha";
const SIGNAL_URL_PREFIX: &str = "signalcaptcha://";
const REGISTRATION_ACTION: &str = "registration";

/// A well-formed captcha, not yet checked with the provider.
pub struct CaptchaToken {
    response: SecretString,
    site_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CaptchaTokenError {
    /// Missing, empty or blank: the client has not solved a captcha.
    #[error("a captcha is required")]
    Missing,
    /// Present but not a token in either accepted form.
    #[error("the captcha is not well formed")]
    Malformed,
}

impl CaptchaToken {
    /// # Errors
    /// [`CaptchaTokenError::Missing`] for blank input, `Malformed` for anything that is not a
    /// token of printable ASCII in one of the accepted forms.
    pub fn parse(raw: &str) -> Result<CaptchaToken, CaptchaTokenError> {
        if raw.trim().is_empty() {
            return Err(CaptchaTokenError::Missing);
        }
        let text = raw.strip_prefix(SIGNAL_URL_PREFIX).unwrap_or(raw);
        let (site_key, response) = match text.strip_prefix(SIGNAL_SCHEME) {
            Some(rest) if rest.starts_with('.') => split_signal_form(&rest[1..])?,
            // Any other Signal scheme (`signal-hcaptcha-short`, `signal-recaptcha-v2`, ...).
            _ if text.starts_with("signal-") => return Err(CaptchaTokenError::Malformed),
            _ => (None, text),
        };
        let printable = response.bytes().all(|b| b.is_ascii_graphic());
        if response.is_empty() || response.len() > MAX_TOKEN_BYTES || !printable {
            return Err(CaptchaTokenError::Malformed);
        }
        Ok(CaptchaToken {
            response: SecretString::from(response.to_owned()),
            site_key,
        })
    }

    /// The hCaptcha response token, for the one call that sends it to the provider.
    pub fn response(&self) -> &str {
        self.response.expose_secret()
    }

    /// The site key the client named, when it used Signal's form.
    pub fn site_key(&self) -> Option<&str> {
        self.site_key.as_deref()
    }
}

/// `<sitekey>.registration.<token>`; the token may itself hold dots.
fn split_signal_form(text: &str) -> Result<(Option<String>, &str), CaptchaTokenError> {
    let mut parts = text.splitn(3, '.');
    let (Some(site_key), Some(action), Some(token)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(CaptchaTokenError::Malformed);
    };
    let key_ok = !site_key.is_empty()
        && site_key.len() <= 64
        && site_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !key_ok || action != REGISTRATION_ACTION {
        return Err(CaptchaTokenError::Malformed);
    }
    Ok((Some(site_key.to_owned()), token))
}

impl fmt::Debug for CaptchaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptchaToken")
            .field("response", &"[redacted]")
            .field("site_key", &self.site_key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "10000000-ffff-ffff-ffff-000000000001";

    #[test]
    fn every_accepted_form_yields_the_token_and_its_site_key() {
        let cases = [
            ("P1_abc.def", None, "P1_abc.def"),
            (
                &*format!("signal-hcaptcha.{KEY}.registration.P1_abc"),
                Some(KEY),
                "P1_abc",
            ),
            (
                &*format!("signalcaptcha://signal-hcaptcha.{KEY}.registration.a.b.c"),
                Some(KEY),
                "a.b.c",
            ),
            ("signalcaptcha://raw-token", None, "raw-token"),
        ];
        for (input, key, token) in cases {
            let parsed = CaptchaToken::parse(input).expect(input);
            assert_eq!(
                (parsed.site_key(), parsed.response()),
                (key, token),
                "{input}"
            );
        }
    }

    #[test]
    fn refused_tokens_say_why() {
        let too_long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let cases = [
            ("", CaptchaTokenError::Missing),
            ("   ", CaptchaTokenError::Missing),
            ("token with spaces", CaptchaTokenError::Malformed),
            ("tab\tinside", CaptchaTokenError::Malformed),
            ("nul\u{0}inside", CaptchaTokenError::Malformed),
            ("tökén", CaptchaTokenError::Malformed),
            ("signal-hcaptcha.only-two", CaptchaTokenError::Malformed),
            (
                "signal-hcaptcha.key.challenge.token",
                CaptchaTokenError::Malformed,
            ),
            (
                "signal-hcaptcha.key.registration.",
                CaptchaTokenError::Malformed,
            ),
            (
                "signal-hcaptcha..registration.token",
                CaptchaTokenError::Malformed,
            ),
            (
                "signal-hcaptcha.k/y.registration.token",
                CaptchaTokenError::Malformed,
            ),
            ("signalcaptcha://", CaptchaTokenError::Malformed),
            (
                "signal-hcaptcha-short.key.registration.code",
                CaptchaTokenError::Malformed,
            ),
            (
                "signal-recaptcha-v2.key.registration.token",
                CaptchaTokenError::Malformed,
            ),
            (&*too_long, CaptchaTokenError::Malformed),
        ];
        for (input, expected) in cases {
            assert_eq!(
                CaptchaToken::parse(input).map(|_| ()),
                Err(expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let parsed = CaptchaToken::parse("very-secret-token").expect("valid");
        assert!(!format!("{parsed:?}").contains("very-secret-token"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(input in "\\PC{0,200}") {
            let _ = CaptchaToken::parse(&input);
        }

        #[test]
        fn a_raw_token_of_printable_ascii_is_kept_as_is(token in "[!-~]{1,300}") {
            prop_assume!(!token.starts_with("signal"));
            let parsed = CaptchaToken::parse(&token).expect("printable token");
            prop_assert_eq!(parsed.response(), token.as_str());
        }
    }
}
