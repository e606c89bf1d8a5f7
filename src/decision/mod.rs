//! Decisions and their reason codes.
//!
//! Every request ends in one decision with one reason. The same reason code appears in the log
//! line, the metric label and docs/api.md, so an operator can follow a refusal from a client's
//! complaint to the rule that made it.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::domain::ClientAddress;

pub mod log_budget;

tokio::task_local! {
    /// Time the request being decided has spent waiting for hCaptcha and signal-server.
    static OUTBOUND: Cell<Duration>;
}

/// Runs the handling of one request with its outbound waits added up, so that its decision
/// line can say how long the gate itself took (`gate_us`) apart from them.
pub async fn counting_outbound<F: Future>(handling: F) -> F::Output {
    OUTBOUND.scope(Cell::new(Duration::ZERO), handling).await
}

/// Adds a wait for hCaptcha or signal-server to the request being decided, if any.
pub fn add_outbound(waited: Duration) {
    let _ = OUTBOUND.try_with(|total| total.set(total.get() + waited));
}

/// Why a request was approved or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Register: a code was requested upstream. Verify: the code was checked.
    Approved,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidNumber,
    CaptchaRequired,
    CaptchaMalformed,
    CaptchaSitekeyMismatch,
    CaptchaReplayed,
    CaptchaRejected,
    CaptchaExpired,
    CaptchaHostnameMismatch,
    CaptchaUnavailable,
    CaptchaMisconfigured,
    CaptchaScore,
    RegisterPerIp,
    RegisterPerBlock,
    RegisterPerNumber,
    RegisterPerPrefix,
    RegisterPerCountry,
    SendSchedule,
    DestinationNotAllowed,
    NumberTypeNotAllowed,
    NumberBlocked,
    AddressBlocked,
    SequentialNumbers,
    SmsPumping,
    VerifyPerIp,
    VerifyPerNumber,
    WrongCodesPerSession,
    WrongCodesPerNumber,
    SessionNotFound,
    UpstreamRejected,
    UpstreamRateLimited,
    UpstreamUnavailable,
    UpstreamTimeout,
    StorageUnavailable,
    /// A verification request sent as a WebSocket frame, answered by the gate with a 403 frame.
    WebsocketVerification,
    /// An HTTP request for signal-server's verification API, in any spelling, that reached
    /// the gate (the example nginx site sends them here); answered with a 403.
    VerificationPath,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Approved => "approved",
            Reason::InvalidRequest => "invalid_request",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::InvalidNumber => "invalid_number",
            Reason::CaptchaRequired => "captcha_required",
            Reason::CaptchaMalformed => "captcha_malformed",
            Reason::CaptchaSitekeyMismatch => "captcha_sitekey_mismatch",
            Reason::CaptchaReplayed => "captcha_replayed",
            Reason::CaptchaRejected => "captcha_rejected",
            Reason::CaptchaExpired => "captcha_expired",
            Reason::CaptchaHostnameMismatch => "captcha_hostname_mismatch",
            Reason::CaptchaUnavailable => "captcha_unavailable",
            Reason::CaptchaMisconfigured => "captcha_misconfigured",
            Reason::CaptchaScore => "captcha_score",
            Reason::RegisterPerIp => "register_per_ip",
            Reason::RegisterPerBlock => "register_per_block",
            Reason::RegisterPerNumber => "register_per_number",
            Reason::RegisterPerPrefix => "register_per_prefix",
            Reason::RegisterPerCountry => "register_per_country",
            Reason::SendSchedule => "send_schedule",
            Reason::DestinationNotAllowed => "destination_not_allowed",
            Reason::NumberTypeNotAllowed => "number_type_not_allowed",
            Reason::NumberBlocked => "number_blocked",
            Reason::AddressBlocked => "address_blocked",
            Reason::SequentialNumbers => "sequential_numbers",
            Reason::SmsPumping => "sms_pumping",
            Reason::VerifyPerIp => "verify_per_ip",
            Reason::VerifyPerNumber => "verify_per_number",
            Reason::WrongCodesPerSession => "wrong_codes_per_session",
            Reason::WrongCodesPerNumber => "wrong_codes_per_number",
            Reason::SessionNotFound => "session_not_found",
            Reason::UpstreamRejected => "upstream_rejected",
            Reason::UpstreamRateLimited => "upstream_rate_limited",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::StorageUnavailable => "storage_unavailable",
            Reason::WebsocketVerification => "websocket_verification",
            Reason::VerificationPath => "verification_path",
        }
    }
}

impl Reason {
    /// `approved` or `refused`, as log lines and metrics name the outcome.
    pub fn outcome(self) -> &'static str {
        if self == Reason::Approved {
            "approved"
        } else {
            "refused"
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The endpoint a decision was made on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Register,
    Verify,
    Websocket,
    /// signal-server's verification API, reached over HTTP by any spelling.
    VerificationApi,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Register => "register",
            Endpoint::Verify => "verify",
            Endpoint::Websocket => "websocket",
            Endpoint::VerificationApi => "verification_api",
        }
    }
}

/// What one request's log line says; filled in as the pipeline learns more.
pub struct DecisionLog {
    endpoint: Endpoint,
    /// Named by its block in the line; formatted only for a line that is written, since under a
    /// flood most are not.
    address: ClientAddress,
    number: Option<String>,
    calling_code: Option<u16>,
    started: std::time::Instant,
    /// Rules that would have refused the request had they been enforced.
    shadowed: Vec<Reason>,
}

impl DecisionLog {
    pub fn new(endpoint: Endpoint, address: ClientAddress) -> DecisionLog {
        DecisionLog {
            endpoint,
            address,
            number: None,
            calling_code: None,
            started: std::time::Instant::now(),
            shadowed: Vec::new(),
        }
    }

    /// Names the number by its short keyed hash and its country code, never in full.
    pub fn number(&mut self, short_hash: String, calling_code: u16) {
        self.number = Some(short_hash);
        self.calling_code = Some(calling_code);
    }

    /// Notes a refusal that shadow mode waived.
    pub fn shadowed(&mut self, reason: Reason) {
        self.shadowed.push(reason);
    }

    /// Writes the one line of this decision.
    pub fn finish(&self, reason: Reason, status: u16, metrics: &crate::metrics::Metrics) {
        let shadowed: Vec<&str> = self.shadowed.iter().map(|r| r.as_str()).collect();
        let outcome = reason.outcome();
        let endpoint = self.endpoint.as_str();
        metrics.decision(self.endpoint, reason);
        for waived in &self.shadowed {
            metrics.shadowed(endpoint, waived.as_str());
        }
        let elapsed = self.started.elapsed();
        let outbound = OUTBOUND.try_with(Cell::get).unwrap_or_default();
        let refused = reason != Reason::Approved;
        if refused && !log_budget::admit(self.endpoint, reason, &self.address) {
            return;
        }
        tracing::info!(
            target: "signal_gate::decision",
            endpoint = self.endpoint.as_str(),
            outcome,
            reason = reason.as_str(),
            status,
            number = self.number.as_deref().unwrap_or("-"),
            country = self.calling_code.unwrap_or(0),
            address_block = %self.address.block_label(),
            would_refuse = %shadowed.join(","),
            elapsed_us = elapsed.as_micros() as u64,
            gate_us = elapsed.saturating_sub(outbound).as_micros() as u64,
            "decision"
        );
    }
}
