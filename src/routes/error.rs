//! The client API's error answers: a status, a stable code and a fixed human message.
//!
//! The message never carries the input, SQL, upstream bodies or a cause chain; those go to the
//! log line of the decision. Captcha refusals share one code and one message whatever the rule,
//! so a client cannot probe which check it failed.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::decision::Reason;
use crate::upstream::UpstreamError;

/// Fallback wait for an upstream 429 that names none.
const UPSTREAM_DEFAULT_RETRY_SECS: u64 = 60;

/// A refusal as the client sees it, with the reason the gate logs.
#[derive(Debug)]
pub struct ApiError {
    pub reason: Reason,
    pub status: StatusCode,
    code: &'static str,
    message: &'static str,
    retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    code: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl ApiError {
    /// The answer for a reason whose status is fixed.
    pub fn refuse(reason: Reason) -> ApiError {
        use Reason::*;
        let (status, code, message) = match reason {
            InvalidRequest => (
                400,
                "invalid_request",
                "The request is malformed or misses a field.",
            ),
            CaptchaRequired => (
                400,
                "captcha_required",
                "Solve the captcha and send its token.",
            ),
            CaptchaMalformed
            | CaptchaSitekeyMismatch
            | CaptchaReplayed
            | CaptchaRejected
            | CaptchaExpired
            | CaptchaHostnameMismatch
            | CaptchaScore => (
                403,
                "captcha_invalid",
                "The captcha was not accepted; solve a new one.",
            ),
            // One answer for every rule about the destination, so a client cannot tell which
            // list or detector a number is on.
            DestinationNotAllowed
            | NumberTypeNotAllowed
            | NumberBlocked
            | SequentialNumbers
            | SmsPumping => (
                403,
                "number_not_allowed",
                "Codes cannot be sent to this number right now.",
            ),
            WebsocketVerification | VerificationPath => (
                403,
                "use_http_endpoints",
                "Verification is served by POST /v1/register and POST /v1/verify only.",
            ),
            SessionNotFound => (404, "session_not_found", "No such session for this number."),
            PayloadTooLarge => (413, "payload_too_large", "The request body is over 4 KiB."),
            UnsupportedMediaType => (
                415,
                "unsupported_media_type",
                "Send the body as application/json.",
            ),
            InvalidNumber => (
                422,
                "invalid_number",
                "That is not a valid international number.",
            ),
            UpstreamUnavailable => (502, "upstream_unavailable", "The server is unavailable."),
            CaptchaUnavailable | CaptchaMisconfigured => (
                503,
                "captcha_unavailable",
                "The captcha cannot be checked right now.",
            ),
            StorageUnavailable => (
                503,
                "storage_unavailable",
                "The gate cannot decide right now.",
            ),
            UpstreamTimeout => (
                504,
                "upstream_timeout",
                "The server did not answer in time.",
            ),
            UpstreamRejected => (502, "upstream_rejected", "The server refused the request."),
            Approved => (500, "internal", "Internal error."),
            RegisterPerIp | RegisterPerBlock | RegisterPerNumber | RegisterPerPrefix
            | RegisterPerCountry | SendSchedule | VerifyPerIp | VerifyPerNumber
            | WrongCodesPerSession | WrongCodesPerNumber | UpstreamRateLimited | AddressBlocked => {
                return ApiError::rate_limited(reason, 1000)
            }
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            reason,
            status,
            code,
            message,
            retry_after_secs: None,
        }
    }

    /// A 429 with the wait rounded up to whole seconds, at least one.
    pub fn rate_limited(reason: Reason, retry_after_ms: u64) -> ApiError {
        ApiError {
            reason,
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "Too many requests; wait before trying again.",
            retry_after_secs: Some(retry_after_ms.div_ceil(1000).max(1)),
        }
    }

    /// The answer for a failed upstream call: its own 4xx kept, everything else 502 or 504.
    pub fn upstream(error: &UpstreamError) -> ApiError {
        match error {
            UpstreamError::Rejected {
                status,
                retry_after,
            } if status.as_u16() == 429 => {
                let secs = retry_after.unwrap_or(UPSTREAM_DEFAULT_RETRY_SECS);
                ApiError::rate_limited(Reason::UpstreamRateLimited, secs.saturating_mul(1000))
            }
            UpstreamError::Rejected {
                status,
                retry_after,
            } => {
                let status =
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                ApiError {
                    reason: Reason::UpstreamRejected,
                    status,
                    code: "upstream_rejected",
                    message: upstream_message(status.as_u16()),
                    retry_after_secs: retry_after.map(|s| s.max(1)),
                }
            }
            UpstreamError::Unavailable(_) | UpstreamError::Unreadable(_) => {
                ApiError::refuse(Reason::UpstreamUnavailable)
            }
            UpstreamError::Timeout => ApiError::refuse(Reason::UpstreamTimeout),
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }
}

/// What signal-server's own refusals mean for the client (UPSTREAM.md, 2.5).
fn upstream_message(status: u16) -> &'static str {
    match status {
        409 => "The session is in the wrong state: already verified, or no code was sent.",
        418 => "This transport cannot reach the number; try the other one.",
        440 => "The code could not be sent; try again later or use the other transport.",
        422 | 499 => "The server does not accept this number.",
        _ => "The server refused the request.",
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code, self.reason)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        response.json(ErrorBody {
            code: self.code,
            message: self.message,
            retry_after: self
                .retry_after_secs
                .filter(|_| self.status.as_u16() == 429),
        })
    }
}

/// Logs an upstream failure and gives the client its answer.
pub(super) fn upstream_failed(step: &str, error: &UpstreamError) -> ApiError {
    tracing::warn!(step, error = %error, "upstream call failed");
    ApiError::upstream(error)
}

/// Logs a storage failure; the client gets a 503.
pub(super) fn storage_failed(error: crate::storage::StoreError) -> ApiError {
    tracing::error!(error = %error, "storage failed");
    ApiError::refuse(Reason::StorageUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wait_is_at_least_one_whole_second() {
        assert_eq!(
            ApiError::rate_limited(Reason::RegisterPerIp, 0).retry_after_secs(),
            Some(1)
        );
        assert_eq!(
            ApiError::rate_limited(Reason::RegisterPerIp, 1001).retry_after_secs(),
            Some(2)
        );
        let upstream = UpstreamError::Rejected {
            status: reqwest::StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(0),
        };
        assert_eq!(ApiError::upstream(&upstream).retry_after_secs(), Some(1));
    }

    #[test]
    fn upstream_refusals_keep_their_status() {
        for status in [409u16, 418, 440, 499] {
            let error = UpstreamError::Rejected {
                status: reqwest::StatusCode::from_u16(status).expect("valid status"),
                retry_after: None,
            };
            let answer = ApiError::upstream(&error);
            assert_eq!(
                (answer.status.as_u16(), answer.code),
                (status, "upstream_rejected")
            );
        }
    }
}
