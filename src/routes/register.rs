//! `POST /v1/register`: check everything the gate can, then ask signal-server to send a code.
//!
//! The steps run cheapest first, so a flood is refused before any outbound call. Budgets that
//! a later step might still refuse are only peeked at first and spent once the captcha has
//! passed: a flood of requests without a solved captcha cannot use up a victim's number.

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::future::join;
use serde::{Deserialize, Serialize};

use super::body::{parse_json, read_bounded};
use super::checks::{
    check_address, check_destination, detect_abuse, peek_number_budgets, spend_number_budgets,
};
use super::error::{storage_failed, upstream_failed};
use super::ApiError;
use crate::captcha::CaptchaPass;
use crate::clock::{Clock, SystemClock};
use crate::decision::{counting_outbound, DecisionLog, Endpoint, Reason};
use crate::domain::{CaptchaToken, CaptchaTokenError, ClientAddress, PhoneNumber, SessionHash};
use crate::gate::{client_context, Gate, NumberKeys, SESSION_LIFETIME};
use crate::limits::{LimitRule, Verdict};
use crate::storage::{ScheduleRead, SendClaim, SendRecord};
use crate::upstream::{UpstreamError, UpstreamSession};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    number: Option<String>,
    captcha: Option<String>,
    transport: Option<String>,
    client: Option<String>,
}

/// A register request after parsing: every field valid.
pub(super) struct RegisterRequest {
    pub number: PhoneNumber,
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
    counting_outbound(decide(request, payload, gate)).await
}

async fn decide(request: HttpRequest, payload: Payload, gate: Data<Gate>) -> HttpResponse {
    let address = gate.client_address(&request);
    let mut log = DecisionLog::new(Endpoint::Register, address);
    match run(&request, payload, &gate, &address, &mut log).await {
        Ok(answer) => {
            log.finish(Reason::Approved, 200, &gate.metrics);
            HttpResponse::Ok().json(answer)
        }
        Err(error) => {
            log.finish(error.reason, error.status.as_u16(), &gate.metrics);
            gate.alerts.observe(error.reason, gate.now_ms());
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
    check_address(gate, address, log).await?;

    let parsed = parse_request(parse_json(request, &body)?)?;
    let keys = gate.number_keys(&parsed.number);
    log.number(keys.hash.short(), parsed.number.calling_code());
    check_destination(gate, &parsed.number, &keys, log)?;
    let schedule = peek_number_budgets(gate, &keys, log).await?;
    // What follows waits on hCaptcha and signal-server. Boxed, its state is allocated only for
    // requests that get this far, rather than carried and copied by every request refused
    // above: that copy was a measurable part of each refusal under a flood.
    let approval = Box::pin(approve(
        request, gate, address, &parsed, &keys, &schedule, log,
    ));
    let session = approval.await?;
    Ok(RegisterResponse {
        session_id: session.id,
        next_sms: session.next_sms,
        next_call: session.next_call,
        next_verification_attempt: session.next_verification_attempt,
        verified: session.verified,
    })
}

/// The steps after the cheap checks: the captcha, the abuse detectors, the budgets and the
/// send schedule, then the code request.
async fn approve(
    request: &HttpRequest,
    gate: &Gate,
    address: &ClientAddress,
    parsed: &RegisterRequest,
    keys: &NumberKeys,
    schedule: &ScheduleRead,
    log: &mut DecisionLog,
) -> Result<UpstreamSession, ApiError> {
    // The captcha's age is measured against hCaptcha's wall clock, not the decision clock.
    let verifying = gate
        .captcha
        .verify(&parsed.captcha, address, SystemClock.now_ms());
    match gate.metrics.captcha(verifying).await {
        Ok(CaptchaPass::Verified) => {}
        Ok(CaptchaPass::FailedOpen) => gate.metrics.fail_open(),
        Err(reason) => gate.refuse(ApiError::refuse(reason), log)?,
    }

    detect_abuse(gate, &parsed.number, address, keys, log).await?;
    spend_number_budgets(gate, keys, log).await?;
    let claim = match claim_send(gate, keys, schedule, log).await {
        Ok(claim) => claim,
        Err(error) => {
            // Refused by the schedule: the prefix and country paid for a code never sent.
            give_back(gate, None, keys).await;
            return Err(error);
        }
    };
    match send_code(request, gate, address, parsed, keys).await {
        Ok(session) => Ok(session),
        Err(failure) => {
            // A code that may have gone out stays charged: giving it back would let a slow
            // upstream be used to send codes past the schedule.
            if !failure.code_may_be_out {
                give_back(gate, claim.as_ref(), keys).await;
            }
            Err(failure.error)
        }
    }
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
    log: &mut DecisionLog,
) -> Result<(), ApiError> {
    match gate.limits.acquire(rule, key, gate.now_ms()).await {
        Verdict::Allowed => Ok(()),
        Verdict::Refused { retry_after_ms } => {
            gate.refuse(ApiError::rate_limited(reason, retry_after_ms), log)
        }
    }
}

/// Takes the number's next send slot; `None` when shadow mode waived a refusal.
async fn claim_send(
    gate: &Gate,
    keys: &NumberKeys,
    seen: &ScheduleRead,
    log: &mut DecisionLog,
) -> Result<Option<SendClaim>, ApiError> {
    let now = gate.now_ms();
    let claiming = gate.store.claim_send(&keys.hash, now, Some(seen));
    match gate
        .metrics
        .storage(claiming)
        .await
        .map_err(storage_failed)?
    {
        Ok(claim) => Ok(Some(claim)),
        Err(wait) => {
            let reason = super::checks::reason_of_wait(wait);
            let wait_ms = wait.until().saturating_sub(now);
            gate.refuse(ApiError::rate_limited(reason, wait_ms), log)?;
            Ok(None)
        }
    }
}

/// No code went out: the number keeps its place in the schedule and its budgets.
async fn give_back(gate: &Gate, claim: Option<&SendClaim>, keys: &NumberKeys) {
    if let Some(claim) = claim {
        if let Err(error) = gate.store.release_send(claim).await {
            let number = claim.number.short();
            tracing::error!(error = %error, number, "could not release a send slot");
        }
    }
    let now = gate.now_ms();
    for (rule, key) in super::checks::number_budget_keys(keys) {
        gate.limits.refund(rule, key, now).await;
    }
}

/// Notes the code for pumping statistics; a failure here costs only statistics.
async fn record_send(
    gate: &Gate,
    session: SessionHash,
    keys: &NumberKeys,
    address: &ClientAddress,
) {
    let record = SendRecord {
        session,
        sent_at: gate.now_ms(),
        calling_code: keys.calling_code,
        prefix: keys.prefix,
        address_block: gate
            .number_key
            .hash_labelled("block", &address.block_label()),
    };
    if let Err(error) = gate.store.record_send(&record).await {
        tracing::error!(error = %error, "could not record a send for pumping statistics");
    }
}

/// Takes back the note of a code that signal-server certainly did not send.
async fn forget_send(gate: &Gate, session: &SessionHash) {
    if let Err(error) = gate.store.forget_send(session).await {
        tracing::error!(error = %error, "could not remove the record of a send that failed");
    }
}

/// A failed attempt to send a code, and whether signal-server may have sent it all the same.
struct SendFailure {
    error: ApiError,
    code_may_be_out: bool,
}

impl From<ApiError> for SendFailure {
    fn from(error: ApiError) -> SendFailure {
        SendFailure {
            error,
            code_may_be_out: false,
        }
    }
}

/// Creates the upstream session, hands over the gate's captcha and asks for the code.
///
/// The gate's own writes run while signal-server answers, not before or after it: the session
/// is stored during the captcha hand-over, and the send noted during the code request. The
/// code is requested only once the session is stored, so a client is never sent a code it
/// could not verify through the gate; a send noted for a request that certainly failed is
/// taken back.
async fn send_code(
    request: &HttpRequest,
    gate: &Gate,
    address: &ClientAddress,
    parsed: &RegisterRequest,
    keys: &NumberKeys,
) -> Result<UpstreamSession, SendFailure> {
    let context = client_context(request, address);
    let (upstream, metrics) = (&gate.upstream, &gate.metrics);
    let creating = upstream.create_session(parsed.number.e164(), context);
    let session = metrics
        .upstream("create_session", creating)
        .await
        .map_err(|e| upstream_failed("create session", &e))?;
    let now = gate.now_ms();
    let expires_at = now + SESSION_LIFETIME.as_millis() as u64;
    let session_hash = gate.number_key.hash_session(&session.id);
    let recording = gate
        .store
        .create_session(&session_hash, &keys.hash, now, expires_at);
    let handing_over = upstream.submit_captcha(&session.id, context);
    let (recorded, handed_over) = join(
        metrics.storage(recording),
        metrics.upstream("submit_captcha", handing_over),
    )
    .await;
    recorded.map_err(storage_failed)?;
    handed_over.map_err(|e| match e {
        // A 4xx here means signal-server refused the gate's own captcha string: a setup
        // fault, not the client's.
        UpstreamError::Rejected { status, .. } if status.as_u16() != 429 => {
            tracing::error!(error = %e, "signal-server refused SIGNAL_GATE_UPSTREAM__CAPTCHA");
            ApiError::refuse(Reason::UpstreamUnavailable)
        }
        other => upstream_failed("hand over the captcha", &other),
    })?;
    let requesting = upstream.request_code(&session.id, parsed.transport, &parsed.client, context);
    let (_, requested) = join(
        record_send(gate, session_hash, keys, address),
        metrics.upstream("request_code", requesting),
    )
    .await;
    let mut answer = match requested {
        Ok(answer) => answer,
        Err(e) => {
            let code_may_be_out = e.may_have_acted();
            if !code_may_be_out {
                forget_send(gate, &session_hash).await;
            }
            return Err(SendFailure {
                code_may_be_out,
                error: upstream_failed("request code", &e),
            });
        }
    };
    // The client gets the id the gate stored, whatever the code request's answer says.
    answer.id = session.id;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses a body as the handler does after reading it.
    fn parse_body(bytes: &[u8]) -> Result<RegisterRequest, ApiError> {
        let body: RegisterBody =
            serde_json::from_slice(bytes).map_err(|_| ApiError::refuse(Reason::InvalidRequest))?;
        parse_request(body)
    }

    proptest! {
        #[test]
        fn any_bytes_are_parsed_or_refused_with_a_client_error(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            if let Err(error) = parse_body(&bytes) {
                prop_assert!(error.status.is_client_error());
            }
        }

        #[test]
        fn any_field_values_are_parsed_or_refused_with_a_client_error(
            number in "\\PC{0,40}",
            captcha in "\\PC{0,80}",
            transport in "\\PC{0,8}",
            client in "\\PC{0,70}",
        ) {
            let body = serde_json::json!({
                "number": number, "captcha": captcha, "transport": transport, "client": client,
            });
            if let Err(error) = parse_body(body.to_string().as_bytes()) {
                prop_assert!(error.status.is_client_error());
            }
        }
    }
}
