//! Reading a request body: bounded in size and time, JSON only.
//!
//! The body is read to its end even when the request will be refused, so the connection stays
//! usable: a refusal that closes the connection costs the gate a new handshake per request. A
//! body over the limit is the exception, since reading it would cost more than the handshake.

use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::decision::Reason;

/// The client API's body limit (DESIGN.md).
pub const MAX_BODY_BYTES: usize = 4096;
/// A body that has not arrived in this time is dropped; slow senders hold no worker.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the whole body, at most [`MAX_BODY_BYTES`].
pub async fn read_bounded(request: &HttpRequest, payload: Payload) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::refuse(Reason::PayloadTooLarge));
    }
    match tokio::time::timeout(BODY_TIMEOUT, collect(payload)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::refuse(Reason::InvalidRequest)),
    }
}

async fn collect(mut payload: Payload) -> Result<Bytes, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::refuse(Reason::InvalidRequest))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::refuse(Reason::PayloadTooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON body into `T`, after checking that it is declared as JSON.
pub fn parse_json<T: DeserializeOwned>(request: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::refuse(Reason::UnsupportedMediaType));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::refuse(Reason::InvalidRequest))
}
