//! The operator listener: `/metrics`, `/healthz`, `/readyz`, and the admin API behind
//! `SIGNAL_GATE_ADMIN__TOKEN` (a bearer token, compared in constant time; without a token set,
//! the admin API answers 404 as if it did not exist).

use actix_web::web::{self, Data, Json, Path};
use actix_web::{HttpRequest, HttpResponse};
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
    if let Err(error) = gate.store.clear_number(&probe_hash(&gate)).await {
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

/// Checks the bearer token; `Err` is the answer to give instead.
fn authorize(request: &HttpRequest, token: &AdminToken) -> Result<String, Box<HttpResponse>> {
    let Some(expected) = &token.0 else {
        return Err(Box::new(
            HttpResponse::NotFound().json(json!({"code": "not_found"})),
        ));
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
    if bool::from(given.ct_eq(&expected)) {
        let who = request
            .peer_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        Ok(who)
    } else {
        Err(Box::new(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(
                    json!({"code": "unauthorized", "message": "A valid admin token is required."}),
                ),
        ))
    }
}

fn admin_of(gate: &Gate, who: String) -> Admin<'_> {
    Admin {
        store: gate.store.as_ref(),
        number_key: &gate.number_key,
        blocklist: Some(&gate.blocklist),
        now_ms: gate.now_ms(),
        who,
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

async fn number_state(
    request: HttpRequest,
    token: Data<AdminToken>,
    gate: Data<Gate>,
    number: Path<String>,
) -> HttpResponse {
    let who = match authorize(&request, &token) {
        Ok(who) => who,
        Err(answer) => return *answer,
    };
    match admin_of(&gate, who).number_report(&number).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => failure(&error),
    }
}

async fn clear_number(
    request: HttpRequest,
    token: Data<AdminToken>,
    gate: Data<Gate>,
    number: Path<String>,
) -> HttpResponse {
    let who = match authorize(&request, &token) {
        Ok(who) => who,
        Err(answer) => return *answer,
    };
    match admin_of(&gate, who).clear_number(&number).await {
        Ok(cleared) => HttpResponse::Ok().json(json!({"cleared": cleared})),
        Err(error) => failure(&error),
    }
}

async fn list_blocks(
    request: HttpRequest,
    token: Data<AdminToken>,
    gate: Data<Gate>,
) -> HttpResponse {
    let who = match authorize(&request, &token) {
        Ok(who) => who,
        Err(answer) => return *answer,
    };
    match admin_of(&gate, who).list_blocks().await {
        Ok(blocks) => HttpResponse::Ok().json(json!({"blocks": blocks})),
        Err(error) => failure(&error),
    }
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

async fn add_block(
    request: HttpRequest,
    token: Data<AdminToken>,
    gate: Data<Gate>,
    body: Json<NewBlock>,
) -> HttpResponse {
    let who = match authorize(&request, &token) {
        Ok(who) => who,
        Err(answer) => return *answer,
    };
    let Ok(duration) = parse_duration(&body.duration) else {
        return failure(&AdminError::InvalidBlock("duration such as 12h".into()));
    };
    let reason = body
        .reason
        .clone()
        .unwrap_or_else(|| format!("operator at {who}"));
    match admin_of(&gate, who)
        .add_block(&body.kind, &body.key, duration, &reason)
        .await
    {
        Ok(block) => HttpResponse::Created().json(block),
        Err(error) => failure(&error),
    }
}

async fn remove_block(
    request: HttpRequest,
    token: Data<AdminToken>,
    gate: Data<Gate>,
    path: Path<(String, String)>,
) -> HttpResponse {
    let who = match authorize(&request, &token) {
        Ok(who) => who,
        Err(answer) => return *answer,
    };
    let (kind, key) = path.into_inner();
    match admin_of(&gate, who).remove_block(&kind, &key).await {
        Ok(removed) => HttpResponse::Ok().json(json!({"removed": removed})),
        Err(error) => failure(&error),
    }
}
