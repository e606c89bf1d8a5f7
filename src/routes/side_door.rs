//! Every other request target. signal-server's own verification API, however it is spelled
//! (`crate::domain::request_path`), is a way around the gate: the example nginx site sends
//! every such request here, and the gate refuses it with a decision of its own, so an operator
//! sees side-door attempts in the log and metrics. Any other path is an unknown endpoint.

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use super::body::read_bounded;
use super::ApiError;
use crate::decision::{DecisionLog, Endpoint, Reason};
use crate::domain::is_verification_path;
use crate::gate::Gate;

pub async fn unrouted(request: HttpRequest, payload: Payload, gate: Data<Gate>) -> HttpResponse {
    // Read (and drop) the body so the connection stays usable for the client's next request.
    let _ = read_bounded(&request, payload).await;
    if !is_verification_path(&request.uri().to_string()) {
        return not_found();
    }
    let address = gate.client_address(&request);
    let log = DecisionLog::new(Endpoint::VerificationApi, address);
    log.finish(Reason::VerificationPath, 403, &gate.metrics);
    ApiError::refuse(Reason::VerificationPath).error_response()
}

/// The admin listener's answer to any path it does not serve.
pub async fn unknown_endpoint() -> HttpResponse {
    not_found()
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"code": "not_found", "message": "No such endpoint."}))
}
