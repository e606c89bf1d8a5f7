//! `POST /v1/register`: check everything the gate can, then ask signal-server to send a code.
//!
//! The steps run cheapest first, so a flood is refused before any outbound call. Budgets that
//! a later step might still refuse are only peeked at first and spent once the captcha has
//! passed: a flood of requests without a solved captcha cannot use up a victim's number.

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use super::body::{parse_json, read_bounded};
use super::ApiError;
use crate::clock::{Clock, SystemClock};
use crate::decision::{DecisionLog, Endpoint, Reason};
use crate::domain::{CaptchaToken, CaptchaTokenError, ClientAddress, NumberHash, PhoneNumber};
use crate::gate::{client_context, Gate, SESSION_LIFETIME};
use crate::limits::{LimitRule, Verdict};
use crate::storage::SendClaim;
use crate::upstream::UpstreamSession;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    number: Option<String>,
    captcha: Option<String>,
    transport: Option<String>,
    client: Option<String>,
}

/// A register request after parsing: every field valid.
struct RegisterRequest {
    number: PhoneNumber,
    captcha: CaptchaToken,
    transport: &'static str,
    client: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegisterResponse {
    session_id: String,
    next_sms: Option<u64>,
    next_call: Option<u64>,
    next_verification_attempt: Option<u64>,
    verified: bool,
}

pub async fn register(request: HttpRequest, payload: Payload, gate: Data<Gate>) -> HttpResponse {
    let address = gate.client_address(&request);
    let mut log = DecisionLog::new(Endpoint::Register, address.block_label());
    let result = run(&request, payload, &gate, &address, &mut log).await;
    match result {
        Ok(answer) => {
            log.finish(Reason::Approved, 200);
            HttpResponse::Ok().json(answer)
        }
        Err(error) => {
            log.finish(error.reason, error.status.as_u16());
            error.error_response()
        }
    }
}

async fn run(
    request: &HttpRequest,
    payload: Payload,
    gate: &Gate,
    address: &ClientAddress,
    log: &mut DecisionLog,
) -> Result<RegisterResponse, ApiError> {
    let body = read_bounded(request, payload).await?;
    spend(
        gate,
        LimitRule::RegisterPerAddress,
        address.limit_key(),
        Reason::RegisterPerIp,
    )
    .await?;

    let parsed = parse_request(parse_json(request, &body)?)?;
    let number = gate.number_key.hash_number(&parsed.number);
    log.number(number.short(), parsed.number.calling_code());
    check_number_budgets(gate, &number).await?;

    // The captcha's age is measured against hCaptcha's wall clock, not the gate's decision clock.
    gate.captcha
        .verify(&parsed.captcha, address, SystemClock.now_ms())
        .await
        .map_err(ApiError::refuse)?;

    spend(
        gate,
        LimitRule::RegisterPerNumber,
        number.limit_key(),
        Reason::RegisterPerNumber,
    )
    .await?;
    let claim = claim_send(gate, &number).await?;
    let sent = send_code(request, gate, address, &parsed, &number).await;
    if sent.is_err() {
        // No code went out: the number keeps its place in the schedule and its budget.
        release_send(gate, &claim).await;
        let rule = LimitRule::RegisterPerNumber;
        gate.limits
            .refund(rule, number.limit_key(), gate.now_ms())
            .await;
    }
    let session = sent?;
    Ok(RegisterResponse {
        session_id: session.id,
        next_sms: session.next_sms,
        next_call: session.next_call,
        next_verification_attempt: session.next_verification_attempt,
        verified: session.verified,
    })
}

fn parse_request(body: RegisterBody) -> Result<RegisterRequest, ApiError> {
    let number = body
        .number
        .ok_or_else(|| ApiError::refuse(Reason::InvalidRequest))?;
    let transport = match body.transport.as_deref() {
        None | Some("sms") => "sms",
        Some("voice") => "voice",
        Some(_) => return Err(ApiError::refuse(Reason::InvalidRequest)),
    };
    let client = body.client.unwrap_or_else(|| "unknown".to_owned());
    let client_ok =
        !client.is_empty() && client.len() <= 64 && client.bytes().all(|b| b.is_ascii_graphic());
    if !client_ok {
        return Err(ApiError::refuse(Reason::InvalidRequest));
    }
    let captcha =
        CaptchaToken::parse(body.captcha.as_deref().unwrap_or("")).map_err(|e| match e {
            CaptchaTokenError::Missing => ApiError::refuse(Reason::CaptchaRequired),
            CaptchaTokenError::Malformed => ApiError::refuse(Reason::CaptchaMalformed),
        })?;
    let number =
        PhoneNumber::parse(&number).map_err(|_| ApiError::refuse(Reason::InvalidNumber))?;
    Ok(RegisterRequest {
        number,
        captcha,
        transport,
        client,
    })
}

/// Spends one unit of a budget, or refuses with its wait.
pub(super) async fn spend(
    gate: &Gate,
    rule: LimitRule,
    key: u128,
    reason: Reason,
) -> Result<(), ApiError> {
    match gate.limits.acquire(rule, key, gate.now_ms()).await {
        Verdict::Allowed => Ok(()),
        Verdict::Refused { retry_after_ms } => Err(ApiError::rate_limited(reason, retry_after_ms)),
    }
}

/// The per-number budgets, looked at without spending them. When both refuse, the client is
/// told the longer wait, so that it does not come back only to be refused by the other.
async fn check_number_budgets(gate: &Gate, number: &NumberHash) -> Result<(), ApiError> {
    let now = gate.now_ms();
    let budget = gate
        .limits
        .peek(LimitRule::RegisterPerNumber, number.limit_key(), now)
        .await;
    let budget_wait = match budget {
        Verdict::Refused { retry_after_ms } => Some((retry_after_ms, Reason::RegisterPerNumber)),
        Verdict::Allowed => None,
    };
    let blocked = gate
        .store
        .send_blocked_until(number, now)
        .await
        .map_err(storage_failed)?;
    let schedule_wait = blocked.map(|until| (until.saturating_sub(now), Reason::SendSchedule));
    match budget_wait.max(schedule_wait) {
        Some((wait, reason)) => Err(ApiError::rate_limited(reason, wait)),
        None => Ok(()),
    }
}

async fn claim_send(gate: &Gate, number: &NumberHash) -> Result<SendClaim, ApiError> {
    let now = gate.now_ms();
    match gate
        .store
        .claim_send(number, now)
        .await
        .map_err(storage_failed)?
    {
        Ok(claim) => Ok(claim),
        Err(until) => Err(ApiError::rate_limited(
            Reason::SendSchedule,
            until.saturating_sub(now),
        )),
    }
}

/// Gives a send slot back when no code went out, so an upstream failure charges no one.
async fn release_send(gate: &Gate, claim: &SendClaim) {
    if let Err(error) = gate.store.release_send(claim).await {
        let number = claim.number.short();
        tracing::error!(error = %error, number, "could not release a send slot");
    }
}

/// Creates the upstream session, hands over the gate's captcha and asks for the code.
async fn send_code(
    request: &HttpRequest,
    gate: &Gate,
    address: &ClientAddress,
    parsed: &RegisterRequest,
    number: &NumberHash,
) -> Result<UpstreamSession, ApiError> {
    let context = client_context(request, address);
    let upstream = &gate.upstream;
    let session = upstream
        .create_session(parsed.number.e164(), context)
        .await
        .map_err(|e| upstream_failed("create session", &e))?;
    let now = gate.now_ms();
    let expires_at = now + SESSION_LIFETIME.as_millis() as u64;
    let session_hash = gate.number_key.hash_session(&session.id);
    gate.store
        .create_session(&session_hash, number, now, expires_at)
        .await
        .map_err(storage_failed)?;
    upstream
        .submit_captcha(&session.id, context)
        .await
        .map_err(|e| {
            // A 4xx here means signal-server refused the gate's own captcha string: a setup fault,
            // not the client's.
            tracing::error!(error = %e, "signal-server refused SIGNAL_GATE_UPSTREAM__CAPTCHA");
            match e {
                crate::upstream::UpstreamError::Rejected { status, .. }
                    if status.as_u16() != 429 =>
                {
                    ApiError::refuse(Reason::UpstreamUnavailable)
                }
                other => ApiError::upstream(&other),
            }
        })?;
    upstream
        .request_code(&session.id, parsed.transport, &parsed.client, context)
        .await
        .map_err(|e| upstream_failed("request code", &e))
}

pub(super) fn upstream_failed(step: &str, error: &crate::upstream::UpstreamError) -> ApiError {
    tracing::warn!(step, error = %error, "upstream call failed");
    ApiError::upstream(error)
}

pub(super) fn storage_failed(error: crate::storage::StoreError) -> ApiError {
    tracing::error!(error = %error, "storage failed");
    ApiError::refuse(Reason::StorageUnavailable)
}
