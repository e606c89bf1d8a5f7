//! The operator listener: `/metrics`, `/healthz`, `/readyz`, and the admin API behind
//! `SIGNAL_GATE_ADMIN__TOKEN` (a bearer token, compared in constant time; without a token set,
//! the admin API answers 404 as if it did not exist).

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Json, Path};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admin::{Admin, AdminError};
use crate::configuration::parse_duration;
use crate::gate::Gate;

/// The admin token, if the API is on.
pub struct AdminToken(pub Option<SecretString>);

/// Registers every operator route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(web::JsonConfig::default().error_handler(|error, _| {
            // The operator API answers in JSON too. The parser's message is not echoed: it can
            // quote the body, and a body can hold a number.
            let answer = HttpResponse::BadRequest().json(json!({
                "code": "invalid_request",
                "message": "The body is not the JSON this endpoint takes (docs/operations.md).",
            }));
            actix_web::error::InternalError::from_response(error, answer).into()
        }))
        .route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/admin/numbers/{number}", web::get().to(number_state))
        .route(
            "/admin/numbers/{number}/clear",
            web::post().to(clear_number),
        )
        .route("/admin/blocks", web::get().to(list_blocks))
        .route("/admin/blocks", web::post().to(add_block))
        .route("/admin/blocks/{kind}/{key}", web::delete().to(remove_block));
}

async fn metrics(gate: Data<Gate>) -> HttpResponse {
    let tracked: Vec<(&'static str, u64)> = gate
        .limits
        .tracked_keys()
        .into_iter()
        .map(|(rule, n)| (rule.name(), n))
        .collect();
    let body = gate.metrics.render(&tracked, gate.blocklist.len());
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

/// Ready when the database takes a write and signal-server answers on its port.
async fn readyz(gate: Data<Gate>) -> HttpResponse {
    let mut problems = Vec::new();
    if let Err(error) = gate.store.probe_write(&probe_hash(&gate)).await {
        tracing::warn!(error = %error, "readiness: database not writable");
        problems.push("database not writable");
    }
    if !gate.upstream.reachable().await {
        problems.push("signal-server unreachable");
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": problems.join("; ")}))
    }
}

/// A hash no number has, so that the write probe touches nobody's state.
fn probe_hash(gate: &Gate) -> crate::domain::NumberHash {
    let bytes = gate.number_key.hash_labelled("readiness-probe", "");
    crate::domain::NumberHash::from_bytes(&bytes).unwrap_or_else(|| unreachable!("32 bytes"))
}

/// An operator who presented the admin token; handlers that take one are behind it.
pub struct Operator {
    /// The caller's address, for the log of every admin action.
    who: String,
}

/// Why a request did not get through to the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    /// No token is configured: the admin API does not exist.
    #[error("not found")]
    Off,
    #[error("a valid admin token is required")]
    Unauthorized,
}

impl ResponseError for AdminAuthError {
    fn error_response(&self) -> HttpResponse {
        match self {
            AdminAuthError::Off => HttpResponse::NotFound().json(json!({"code": "not_found"})),
            AdminAuthError::Unauthorized => HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(
                    json!({"code": "unauthorized", "message": "A valid admin token is required."}),
                ),
        }
    }
}

impl FromRequest for Operator {
    type Error = AdminAuthError;
    type Future = Ready<Result<Operator, AdminAuthError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(request))
    }
}

/// Checks the bearer token against `SIGNAL_GATE_ADMIN__TOKEN`.
fn authorize(request: &HttpRequest) -> Result<Operator, AdminAuthError> {
    let token = request
        .app_data::<Data<AdminToken>>()
        .and_then(|t| t.0.as_ref());
    let Some(expected) = token else {
        return Err(AdminAuthError::Off);
    };
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Hash both sides so the comparison takes the same time whatever the lengths.
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.expose_secret().as_bytes());
    if !bool::from(given.ct_eq(&expected)) {
        return Err(AdminAuthError::Unauthorized);
    }
    let who = request
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    Ok(Operator { who })
}

fn admin_of(gate: &Gate, operator: Operator) -> Admin<'_> {
    Admin {
        store: gate.store.as_ref(),
        number_key: &gate.number_key,
        blocklist: Some(&gate.blocklist),
        now_ms: gate.now_ms(),
        who: operator.who,
    }
}

fn failure(error: &AdminError) -> HttpResponse {
    match error {
        AdminError::InvalidNumber | AdminError::InvalidBlock(_) => HttpResponse::BadRequest()
            .json(json!({"code": "invalid_request", "message": error.to_string()})),
        AdminError::Storage(_) => {
            tracing::error!(error = %error, "admin action failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"code": "storage_unavailable", "message": "Storage failed."}))
        }
    }
}

/// Turns an admin action's result into its answer.
fn answer<T: serde::Serialize>(result: Result<T, AdminError>, status: StatusCode) -> HttpResponse {
    match result {
        Ok(body) => HttpResponse::build(status).json(body),
        Err(error) => failure(&error),
    }
}

async fn number_state(operator: Operator, gate: Data<Gate>, number: Path<String>) -> HttpResponse {
    let report = admin_of(&gate, operator).number_report(&number).await;
    answer(report, StatusCode::OK)
}

async fn clear_number(operator: Operator, gate: Data<Gate>, number: Path<String>) -> HttpResponse {
    let cleared = admin_of(&gate, operator).clear_number(&number).await;
    answer(
        cleared.map(|cleared| json!({"cleared": cleared})),
        StatusCode::OK,
    )
}

async fn list_blocks(operator: Operator, gate: Data<Gate>) -> HttpResponse {
    let blocks = admin_of(&gate, operator).list_blocks().await;
    answer(
        blocks.map(|blocks| json!({"blocks": blocks})),
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBlock {
    kind: String,
    key: String,
    /// How long, as `30m`, `12h` or `7d`.
    duration: String,
    reason: Option<String>,
}

async fn add_block(operator: Operator, gate: Data<Gate>, body: Json<NewBlock>) -> HttpResponse {
    let Ok(duration) = parse_duration(&body.duration) else {
        return failure(&AdminError::InvalidBlock("duration such as 12h".into()));
    };
    let reason = body
        .reason
        .clone()
        .unwrap_or_else(|| format!("operator at {}", operator.who));
    let added = admin_of(&gate, operator)
        .add_block(&body.kind, &body.key, duration, &reason)
        .await;
    answer(added, StatusCode::CREATED)
}

async fn remove_block(
    operator: Operator,
    gate: Data<Gate>,
    path: Path<(String, String)>,
) -> HttpResponse {
    let (kind, key) = path.into_inner();
    let removed = admin_of(&gate, operator).remove_block(&kind, &key).await;
    answer(
        removed.map(|removed| json!({"removed": removed})),
        StatusCode::OK,
    )
}
