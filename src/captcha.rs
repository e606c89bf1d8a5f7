//! Server-side hCaptcha checks: site key, replay, siteverify, hostname and age.
//!
//! The order is cheapest first: a token for another site key or one already seen is refused
//! without asking hCaptcha. The token is remembered before siteverify is asked, so parallel
//! replays of one token cannot all slip through while the first is in flight. The replay memory
//! is bounded and in-process; after a restart hCaptcha's own single-use rule
//! (`already-seen-response`) still refuses a replay, one provider call later.
//!
//! When hCaptcha cannot be asked (timeout, connection error, a status other than 200, an answer
//! over 64 KiB or not the siteverify shape, a success without a readable `challenge_ts`) the
//! gate fails closed unless `SIGNAL_GATE_HCAPTCHA__ON_ERROR=open`. An answer that says the
//! gate's own secret or site key is wrong is never a reason to fail open.
//!
//! siteverify is called with reqwest directly rather than through the `hcaptcha` crate, whose
//! client reads any status as an answer (a 502 page carrying `"success": true` passed) and reads
//! answers of any size.

use std::time::Duration;

use moka::sync::Cache;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::configuration::{HcaptchaSettings, OnError};
use crate::decision::Reason;
use crate::domain::{CaptchaToken, ClientAddress};
use crate::telemetry;

/// Tokens remembered for replay checks at most; beyond it moka keeps the most used.
const SEEN_TOKENS_CAPACITY: u64 = 200_000;
/// Largest siteverify answer read; a real one is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How far in the future `challenge_ts` may be, for clocks that disagree a little.
const CLOCK_SKEW_MS: u64 = 60_000;

/// What siteverify answers (UPSTREAM.md section 8).
#[derive(Debug, Deserialize)]
struct SiteverifyAnswer {
    success: bool,
    challenge_ts: Option<String>,
    hostname: Option<String>,
    #[serde(rename = "error-codes", default)]
    error_codes: Vec<String>,
    /// hCaptcha Enterprise only: 0 is a human, 1 a bot.
    score: Option<f64>,
}

/// How a captcha passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptchaPass {
    Verified,
    /// hCaptcha could not be asked and the operator chose to fail open.
    FailedOpen,
}

/// Checks captchas against hCaptcha's siteverify.
pub struct CaptchaVerifier {
    client: reqwest::Client,
    verify_url: reqwest::Url,
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
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let seen = Cache::builder()
            .max_capacity(SEEN_TOKENS_CAPACITY)
            .time_to_live(settings.token_lifetime + Duration::from_secs(60))
            .build();
        Ok(CaptchaVerifier {
            client,
            verify_url: settings.verify_url.clone(),
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

    /// siteverify's answer when it is a success; the refusal or outage otherwise.
    async fn ask_provider(
        &self,
        token: &CaptchaToken,
        client: &ClientAddress,
    ) -> Result<SiteverifyAnswer, Reason> {
        let asking = self.post_siteverify(token, client);
        let answer = match tokio::time::timeout(self.timeout, asking).await {
            Ok(answer) => answer?,
            Err(_) => {
                let timeout_ms = self.timeout.as_millis() as u64;
                tracing::warn!(timeout_ms, "siteverify timed out");
                return Err(Reason::CaptchaUnavailable);
            }
        };
        if answer.success {
            Ok(answer)
        } else {
            Err(classify_codes(&answer.error_codes))
        }
    }

    async fn post_siteverify(
        &self,
        token: &CaptchaToken,
        client: &ClientAddress,
    ) -> Result<SiteverifyAnswer, Reason> {
        let unavailable = |what: &str, detail: String| {
            tracing::warn!(detail, "siteverify failed: {what}");
            Reason::CaptchaUnavailable
        };
        let form = [
            ("secret", self.secret.expose_secret()),
            ("response", token.response()),
            ("remoteip", &client.ip().to_string()),
            ("sitekey", &self.sitekey),
        ];
        let sending = self.client.post(self.verify_url.clone()).form(&form).send();
        let mut response = sending
            .await
            .map_err(|e| unavailable("no answer", telemetry::describe(e)))?;
        if response.status() != StatusCode::OK {
            return Err(unavailable("status", response.status().to_string()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable("answer cut short", telemetry::describe(e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(unavailable(
                    "answer too large",
                    format!("over {MAX_ANSWER_BYTES}"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| unavailable("unreadable answer", e.to_string()))
    }

    fn check_answer(&self, answer: &SiteverifyAnswer, now_ms: u64) -> Result<CaptchaPass, Reason> {
        if !self.hostnames.is_empty() {
            let hostname = answer.hostname.as_deref().unwrap_or_default();
            if !self.hostnames.contains(&hostname.to_ascii_lowercase()) {
                return Err(Reason::CaptchaHostnameMismatch);
            }
        }
        if let (Some(max), Some(score)) = (self.max_score, answer.score) {
            if score > max {
                return Err(Reason::CaptchaScore);
            }
        }
        check_age(answer.challenge_ts.as_deref(), now_ms, self.token_lifetime)?;
        Ok(CaptchaPass::Verified)
    }
}

/// Refuses a token solved longer than `lifetime` ago. Without a readable solve time, or with
/// one well in the future, the age is unknown: an unusable answer, not a pass.
fn check_age(challenge_ts: Option<&str>, now_ms: u64, lifetime: Duration) -> Result<(), Reason> {
    let Some(solved_at) = challenge_ts.and_then(parse_timestamp) else {
        tracing::warn!("siteverify answered success without a readable challenge_ts");
        return Err(Reason::CaptchaUnavailable);
    };
    if solved_at > now_ms + CLOCK_SKEW_MS {
        tracing::warn!(
            ahead_ms = solved_at - now_ms,
            "challenge_ts is in the future; check this machine's clock"
        );
        return Err(Reason::CaptchaUnavailable);
    }
    if now_ms.saturating_sub(solved_at) > lifetime.as_millis() as u64 {
        return Err(Reason::CaptchaExpired);
    }
    Ok(())
}

/// Sorts siteverify's error codes: the client's token, or the gate's own configuration.
fn classify_codes(codes: &[String]) -> Reason {
    let has = |name: &str| codes.iter().any(|code| code == name);
    let ours = [
        "missing-input-secret",
        "invalid-input-secret",
        "sitekey-secret-mismatch",
        "bad-request",
        "missing-remoteip",
        "invalid-remoteip",
    ];
    if ours.iter().any(|code| has(code)) {
        tracing::error!(codes = ?codes, "hCaptcha refused the gate's secret, site key or request");
        Reason::CaptchaMisconfigured
    } else if has("expired-input-response") {
        Reason::CaptchaExpired
    } else if has("already-seen-response") || has("invalid-or-already-seen-response") {
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
        let cases = [
            (&["invalid-input-response"][..], Reason::CaptchaRejected),
            (&["missing-input-response"], Reason::CaptchaRejected),
            (&["expired-input-response"], Reason::CaptchaExpired),
            (&["already-seen-response"], Reason::CaptchaReplayed),
            (
                &["invalid-or-already-seen-response"],
                Reason::CaptchaReplayed,
            ),
            (&["not-using-dummy-secret"], Reason::CaptchaRejected),
            (&[], Reason::CaptchaRejected),
            (&["invalid-input-secret"], Reason::CaptchaMisconfigured),
            (
                &["invalid-input-response", "sitekey-secret-mismatch"],
                Reason::CaptchaMisconfigured,
            ),
        ];
        for (codes, expected) in cases {
            let codes: Vec<String> = codes.iter().map(|c| (*c).to_owned()).collect();
            assert_eq!(classify_codes(&codes), expected, "{codes:?}");
        }
    }

    #[test]
    fn a_token_without_a_readable_or_believable_age_does_not_pass() {
        let lifetime = Duration::from_secs(120);
        let now = 1_000_000_000;
        let at = |ms: u64| {
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
            at.expect("in range").format(&Rfc3339).expect("formats")
        };
        assert_eq!(check_age(Some(&at(now - 5_000)), now, lifetime), Ok(()));
        assert_eq!(check_age(Some(&at(now + 30_000)), now, lifetime), Ok(()));
        assert_eq!(
            check_age(Some(&at(now - 121_000)), now, lifetime),
            Err(Reason::CaptchaExpired)
        );
        for unusable in [None, Some("yesterday"), Some(at(now + 3_600_000).as_str())] {
            assert_eq!(
                check_age(unusable, now, lifetime),
                Err(Reason::CaptchaUnavailable),
                "{unusable:?}"
            );
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
