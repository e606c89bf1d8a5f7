//! Server-side hCaptcha checks: site key, replay, siteverify, hostname and age.
//!
//! The order is cheapest first: a token for another site key or one already seen is refused
//! without asking hCaptcha. The token is remembered before siteverify is asked, so parallel
//! replays of one token cannot all slip through while the first is in flight. The replay memory
//! is bounded and in-process; after a restart hCaptcha's own single-use rule
//! (`already-seen-response`) still refuses a replay, one provider call later.
//!
//! When hCaptcha cannot be asked (timeout, connection error, an answer that is not JSON) the
//! gate fails closed unless `SIGNAL_GATE_HCAPTCHA__ON_ERROR=open`. An answer that says the
//! gate's own secret or site key is wrong is never a reason to fail open.

use std::collections::HashSet;
use std::time::Duration;

use hcaptcha::{Code, Error as HcaptchaError};
use moka::sync::Cache;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::configuration::{HcaptchaSettings, OnError};
use crate::decision::Reason;
use crate::domain::{CaptchaToken, ClientAddress};

/// Tokens remembered for replay checks at most; beyond it moka keeps the most used.
const SEEN_TOKENS_CAPACITY: u64 = 200_000;

/// How a captcha passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptchaPass {
    Verified,
    /// hCaptcha could not be asked and the operator chose to fail open.
    FailedOpen,
}

/// Checks captchas against hCaptcha's siteverify.
pub struct CaptchaVerifier {
    client: hcaptcha::Client,
    secret: SecretString,
    sitekey: String,
    hostnames: Vec<String>,
    timeout: Duration,
    token_lifetime: Duration,
    on_error: OnError,
    max_score: Option<f64>,
    seen: Cache<[u8; 32], ()>,
}

impl CaptchaVerifier {
    /// # Errors
    /// When the verify URL cannot be used.
    pub fn new(settings: &HcaptchaSettings) -> anyhow::Result<CaptchaVerifier> {
        let client = hcaptcha::Client::new_with(settings.verify_url.as_str())?;
        let seen = Cache::builder()
            .max_capacity(SEEN_TOKENS_CAPACITY)
            .time_to_live(settings.token_lifetime + Duration::from_secs(60))
            .build();
        Ok(CaptchaVerifier {
            client,
            secret: settings.secret.clone(),
            sitekey: settings.sitekey.clone(),
            hostnames: settings.hostnames.clone(),
            timeout: settings.timeout,
            token_lifetime: settings.token_lifetime,
            on_error: settings.on_error,
            max_score: settings.max_score,
            seen,
        })
    }

    /// Checks one captcha for one client.
    ///
    /// # Errors
    /// The [`Reason`] the captcha is refused for.
    pub async fn verify(
        &self,
        token: &CaptchaToken,
        client: &ClientAddress,
        now_ms: u64,
    ) -> Result<CaptchaPass, Reason> {
        if token
            .site_key()
            .is_some_and(|key| !key.eq_ignore_ascii_case(&self.sitekey))
        {
            return Err(Reason::CaptchaSitekeyMismatch);
        }
        let fingerprint: [u8; 32] = Sha256::digest(token.response().as_bytes()).into();
        if !self.seen.entry(fingerprint).or_insert(()).is_fresh() {
            return Err(Reason::CaptchaReplayed);
        }
        match self.ask_provider(token, client).await {
            Ok(answer) => self.check_answer(&answer, now_ms),
            Err(Reason::CaptchaUnavailable) if self.on_error == OnError::Open => {
                tracing::warn!(
                    reason = "captcha_unavailable",
                    "hCaptcha unreachable; failing open"
                );
                Ok(CaptchaPass::FailedOpen)
            }
            Err(reason) => Err(reason),
        }
    }

    async fn ask_provider(
        &self,
        token: &CaptchaToken,
        client: &ClientAddress,
    ) -> Result<hcaptcha::Response, Reason> {
        let request =
            hcaptcha::Request::new_from_response(self.secret.expose_secret(), token.response())
                .and_then(|r| r.set_remoteip(&client.ip().to_string()))
                .and_then(|r| r.set_sitekey(&self.sitekey))
                .map_err(|e| {
                    tracing::error!(error = %e, "could not build the siteverify request");
                    Reason::CaptchaMisconfigured
                })?;
        let answer = tokio::time::timeout(self.timeout, self.client.verify_request(request)).await;
        match answer {
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "siteverify timed out"
                );
                Err(Reason::CaptchaUnavailable)
            }
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(HcaptchaError::Codes(codes))) => Err(classify_codes(&codes)),
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "siteverify failed");
                Err(Reason::CaptchaUnavailable)
            }
        }
    }

    fn check_answer(
        &self,
        answer: &hcaptcha::Response,
        now_ms: u64,
    ) -> Result<CaptchaPass, Reason> {
        if !self.hostnames.is_empty() {
            let hostname = answer.hostname().unwrap_or_default().to_ascii_lowercase();
            if !self.hostnames.contains(&hostname) {
                return Err(Reason::CaptchaHostnameMismatch);
            }
        }
        // hCaptcha Enterprise scores risk: 0 is a human, 1 a bot.
        let score = answer.score().map(f64::from);
        if let (Some(max), Some(score)) = (self.max_score, score) {
            if score > max {
                return Err(Reason::CaptchaScore);
            }
        }
        if let Some(solved_at) = answer.timestamp().as_deref().and_then(parse_timestamp) {
            let age_ms = now_ms.saturating_sub(solved_at);
            if age_ms > self.token_lifetime.as_millis() as u64 {
                return Err(Reason::CaptchaExpired);
            }
        }
        Ok(CaptchaPass::Verified)
    }
}

/// Sorts siteverify's error codes: the client's token, or the gate's own configuration.
fn classify_codes(codes: &HashSet<Code>) -> Reason {
    let ours = codes.iter().any(|code| {
        matches!(
            code,
            Code::MissingSecret
                | Code::InvalidSecret
                | Code::SiteSecretMismatch
                | Code::MissingSiteKey
                | Code::InvalidSiteKey
                | Code::BadRequest
                | Code::InvalidSecretExtWrongLen
                | Code::InvalidSecretExtNotHex
                | Code::SecretVersionUnknown
        ) || matches!(code, Code::Unknown(text) if text == "sitekey-secret-mismatch")
    });
    if ours {
        tracing::error!(codes = ?codes, "hCaptcha refused the gate's secret or site key");
        return Reason::CaptchaMisconfigured;
    }
    let is = |name: &str| {
        codes
            .iter()
            .any(|c| matches!(c, Code::Unknown(t) if t == name))
    };
    if is("expired-input-response") {
        Reason::CaptchaExpired
    } else if is("already-seen-response") || codes.contains(&Code::InvalidAlreadySeen) {
        Reason::CaptchaReplayed
    } else {
        Reason::CaptchaRejected
    }
}

/// `challenge_ts` as milliseconds since the epoch.
fn parse_timestamp(text: &str) -> Option<u64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_codes_are_sorted_between_client_and_operator() {
        let set = |codes: &[Code]| codes.iter().cloned().collect::<HashSet<_>>();
        let unknown = |text: &str| Code::Unknown(text.to_owned());
        let cases = [
            (set(&[Code::InvalidResponse]), Reason::CaptchaRejected),
            (set(&[Code::MissingResponse]), Reason::CaptchaRejected),
            (
                set(&[unknown("expired-input-response")]),
                Reason::CaptchaExpired,
            ),
            (
                set(&[unknown("already-seen-response")]),
                Reason::CaptchaReplayed,
            ),
            (set(&[Code::InvalidAlreadySeen]), Reason::CaptchaReplayed),
            (
                set(&[unknown("not-using-dummy-secret")]),
                Reason::CaptchaRejected,
            ),
            (set(&[Code::InvalidSecret]), Reason::CaptchaMisconfigured),
            (
                set(&[Code::SiteSecretMismatch]),
                Reason::CaptchaMisconfigured,
            ),
        ];
        for (codes, expected) in cases {
            assert_eq!(classify_codes(&codes), expected, "{codes:?}");
        }
    }

    #[test]
    fn challenge_timestamps_parse_in_the_forms_hcaptcha_uses() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:10Z"), Some(10_000));
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:10.500+00:00"),
            Some(10_500)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
