//! `POST /v1/verify`: check a code for a session the gate created for that number.
//!
//! A wrong-code unit is taken from the session's and the number's budgets before the code goes
//! upstream, and given back if the code was right or was never checked. Taking it first is what
//! keeps parallel guesses within the budget: they cannot all pass a check made before any of
//! them is counted.

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use super::body::{parse_json, read_bounded};
use super::error::{storage_failed, upstream_failed};
use super::register::spend;
use super::ApiError;
use crate::decision::{counting_outbound, DecisionLog, Endpoint, Reason};
use crate::domain::{ClientAddress, NumberHash, PhoneNumber, SessionHash};
use crate::gate::{client_context, Gate};
use crate::limits::LimitRule;
use crate::storage::{GuessClaim, GuessRefusal};

/// Longest session id accepted; signal-server's are well under 100 characters.
/// Longest code accepted; signal-server's codes have six digits.
const MAX_CODE_CHARS: usize = 16;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VerifyBody {
    session_id: Option<String>,
    number: Option<String>,
    code: Option<String>,
}

struct VerifyRequest {
    session_id: String,
    number: PhoneNumber,
    code: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyResponse {
    session_id: String,
    verified: bool,
    next_verification_attempt: Option<u64>,
}

pub async fn verify(request: HttpRequest, payload: Payload, gate: Data<Gate>) -> HttpResponse {
    counting_outbound(decide(request, payload, gate)).await
}

async fn decide(request: HttpRequest, payload: Payload, gate: Data<Gate>) -> HttpResponse {
    let address = gate.client_address(&request);
    let mut log = DecisionLog::new(Endpoint::Verify, address);
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
) -> Result<VerifyResponse, ApiError> {
    let body = read_bounded(request, payload).await?;
    spend(
        gate,
        LimitRule::VerifyPerAddress,
        address.limit_key(),
        Reason::VerifyPerIp,
        log,
    )
    .await?;

    let parsed = parse_request(parse_json(request, &body)?)?;
    let number = gate.number_key.hash_number(&parsed.number);
    log.number(number.short(), parsed.number.calling_code());
    let session = gate.number_key.hash_session(&parsed.session_id);
    check_session_owner(gate, &session, &number).await?;
    spend(
        gate,
        LimitRule::VerifyPerNumber,
        number.limit_key(),
        Reason::VerifyPerNumber,
        log,
    )
    .await?;

    let claim = claim_guess(gate, &session, &number, log).await?;
    let context = client_context(request, address);
    let submitting = gate
        .upstream
        .submit_code(&parsed.session_id, &parsed.code, context);
    let checked = gate.metrics.upstream("submit_code", submitting).await;
    let outcome = match checked {
        Ok(upstream) => upstream,
        Err(error) => {
            // A guess signal-server may have checked stays counted.
            if !error.may_have_acted() {
                release_guess(gate, claim.as_ref()).await;
            }
            return Err(upstream_failed("submit code", &error));
        }
    };
    if outcome.verified {
        release_guess(gate, claim.as_ref()).await;
        gate.store
            .mark_verified(&session, gate.now_ms())
            .await
            .map_err(storage_failed)?;
    }
    Ok(VerifyResponse {
        session_id: parsed.session_id,
        verified: outcome.verified,
        next_verification_attempt: outcome.next_verification_attempt,
    })
}

fn parse_request(body: VerifyBody) -> Result<VerifyRequest, ApiError> {
    let invalid = || ApiError::refuse(Reason::InvalidRequest);
    let (Some(session_id), Some(number), Some(code)) = (body.session_id, body.number, body.code)
    else {
        return Err(invalid());
    };
    let id_ok = crate::domain::is_session_id(&session_id);
    let code_ok = !code.is_empty()
        && code.len() <= MAX_CODE_CHARS
        && code.bytes().all(|b| b.is_ascii_digit());
    if !id_ok || !code_ok {
        return Err(invalid());
    }
    let number =
        PhoneNumber::parse(&number).map_err(|_| ApiError::refuse(Reason::InvalidNumber))?;
    Ok(VerifyRequest {
        session_id,
        number,
        code,
    })
}

/// The session must be one the gate created for this very number; any other answer looks the
/// same, so a client cannot learn whose session an id is.
async fn check_session_owner(
    gate: &Gate,
    session: &SessionHash,
    number: &NumberHash,
) -> Result<(), ApiError> {
    let record = gate
        .store
        .find_session(session)
        .await
        .map_err(storage_failed)?;
    match record {
        Some(record) if record.number == *number && record.expires_at > gate.now_ms() => Ok(()),
        _ => Err(ApiError::refuse(Reason::SessionNotFound)),
    }
}

/// Takes a wrong-code unit; `None` when shadow mode waived a refusal.
async fn claim_guess(
    gate: &Gate,
    session: &SessionHash,
    number: &NumberHash,
    log: &mut DecisionLog,
) -> Result<Option<GuessClaim>, ApiError> {
    let now = gate.now_ms();
    let claiming = gate.store.claim_guess(session, number, now);
    let claimed = gate
        .metrics
        .storage(claiming)
        .await
        .map_err(storage_failed)?;
    let refusal = match claimed {
        Ok(claim) => return Ok(Some(claim)),
        Err(GuessRefusal::NumberLocked { until }) => {
            ApiError::rate_limited(Reason::WrongCodesPerNumber, until.saturating_sub(now))
        }
        Err(GuessRefusal::SessionSpent) => {
            // The way on is a new code in a new session: say when the number may get one.
            let schedule = gate
                .store
                .read_schedule(number, now)
                .await
                .map_err(storage_failed)?;
            let wait = schedule.wait.map_or(0, |at| at.until().saturating_sub(now));
            ApiError::rate_limited(Reason::WrongCodesPerSession, wait)
        }
    };
    gate.refuse(refusal, log)?;
    Ok(None)
}

async fn release_guess(gate: &Gate, claim: Option<&GuessClaim>) {
    let Some(claim) = claim else { return };
    if let Err(error) = gate.store.release_guess(claim).await {
        let number = claim.number.short();
        tracing::error!(error = %error, number, "could not release a guess");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_body(bytes: &[u8]) -> Result<VerifyRequest, ApiError> {
        let body: VerifyBody =
            serde_json::from_slice(bytes).map_err(|_| ApiError::refuse(Reason::InvalidRequest))?;
        parse_request(body)
    }

    proptest! {
        #[test]
        fn any_verify_body_is_parsed_or_refused_with_a_client_error(
            session in "\\PC{0,300}",
            number in "\\PC{0,40}",
            code in "\\PC{0,20}",
        ) {
            let body = serde_json::json!({"sessionId": session, "number": number, "code": code});
            if let Err(error) = parse_body(body.to_string().as_bytes()) {
                prop_assert!(error.status.is_client_error());
            }
        }
    }
}
