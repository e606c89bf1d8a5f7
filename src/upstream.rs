//! signal-server's verification-session API, as the gate uses it.
//!
//! Register: create a session for the canonical number, hand over the gate's own captcha string
//! (the client's was checked by the gate), and request a code. Verify: submit the code. The
//! client's address goes along as the only `X-Forwarded-For` entry, so signal-server's per-IP
//! collation key is the client's, not the gate's. No call is retried: a second code request
//! could send a second SMS, and session creation is cheap to redo by the client.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT_LANGUAGE, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::configuration::UpstreamSettings;
use crate::telemetry;

/// Largest upstream answer read; a session object is a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The fields of signal-server's `VerificationSessionResponse` the gate uses.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSession {
    pub id: String,
    pub next_sms: Option<u64>,
    pub next_call: Option<u64>,
    pub next_verification_attempt: Option<u64>,
    #[serde(default)]
    pub allowed_to_request_code: bool,
    /// Required: a success without it says nothing about the code, and must not read as a
    /// wrong one.
    pub verified: bool,
}

/// Why an upstream call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// signal-server answered with a 4xx of its own.
    #[error("signal-server refused the request with {status}")]
    Rejected {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    /// signal-server did not act: the connection failed, or it answered 5xx.
    #[error("signal-server is unavailable: {0}")]
    Unavailable(String),
    /// signal-server may have acted but its answer is unusable: the connection broke after the
    /// request went out, or a success came with a body that is not a session.
    #[error("signal-server's answer is unusable: {0}")]
    Unreadable(String),
    /// No answer in time; signal-server may still have acted.
    #[error("signal-server did not answer in time")]
    Timeout,
}

impl UpstreamError {
    /// True when signal-server may have done what was asked (sent the code, checked the
    /// guess) although the gate saw no success: such a call is charged, never given back.
    pub fn may_have_acted(&self) -> bool {
        matches!(self, UpstreamError::Unreadable(_) | UpstreamError::Timeout)
    }
}

/// What the client's request says about the client, passed on to signal-server.
#[derive(Clone, Copy, Debug)]
pub struct ClientContext<'a> {
    pub address: IpAddr,
    pub user_agent: Option<&'a str>,
    pub accept_language: Option<&'a str>,
}

/// A client of one signal-server.
pub struct UpstreamClient {
    http: reqwest::Client,
    base: Url,
    captcha: SecretString,
}

impl UpstreamClient {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<UpstreamClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(UpstreamClient {
            http,
            base: settings.url.clone(),
            captcha: settings.captcha.clone(),
        })
    }

    /// signal-server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// True when signal-server answers HTTP at all (any status), for readiness checks.
    pub async fn reachable(&self) -> bool {
        let url = self.base.clone();
        self.http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok()
    }

    /// `POST /v1/verification/session`.
    pub async fn create_session(
        &self,
        e164: &str,
        client: ClientContext<'_>,
    ) -> Result<UpstreamSession, UpstreamError> {
        #[derive(Serialize)]
        struct Body<'a> {
            number: &'a str,
        }
        self.call(Method::POST, &[], &Body { number: e164 }, client)
            .await
    }

    /// `PATCH /v1/verification/session/{id}` with the gate's captcha string.
    pub async fn submit_captcha(
        &self,
        session_id: &str,
        client: ClientContext<'_>,
    ) -> Result<UpstreamSession, UpstreamError> {
        #[derive(Serialize)]
        struct Body<'a> {
            captcha: &'a str,
        }
        let body = Body {
            captcha: self.captcha.expose_secret(),
        };
        self.call(Method::PATCH, &[session_id], &body, client).await
    }

    /// `POST /v1/verification/session/{id}/code`.
    pub async fn request_code(
        &self,
        session_id: &str,
        transport: &str,
        client_kind: &str,
        client: ClientContext<'_>,
    ) -> Result<UpstreamSession, UpstreamError> {
        #[derive(Serialize)]
        struct Body<'a> {
            transport: &'a str,
            client: &'a str,
        }
        let body = Body {
            transport,
            client: client_kind,
        };
        self.call(Method::POST, &[session_id, "code"], &body, client)
            .await
    }

    /// `PUT /v1/verification/session/{id}/code`.
    pub async fn submit_code(
        &self,
        session_id: &str,
        code: &str,
        client: ClientContext<'_>,
    ) -> Result<UpstreamSession, UpstreamError> {
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'a str,
        }
        self.call(Method::PUT, &[session_id, "code"], &Body { code }, client)
            .await
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: &impl Serialize,
        client: ClientContext<'_>,
    ) -> Result<UpstreamSession, UpstreamError> {
        let url = self.session_url(segments)?;
        let response = self
            .http
            .request(method, url)
            .headers(forwarded_headers(client))
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after_seconds(response.headers());
        let bytes = read_bounded(response).await?;
        if status.is_client_error() {
            return Err(UpstreamError::Rejected {
                status,
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Unavailable(format!("status {status}")));
        }
        parse_session(&bytes)
    }

    /// `{base}/v1/verification/session/{segments...}`, each segment escaped.
    fn session_url(&self, segments: &[&str]) -> Result<Url, UpstreamError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| UpstreamError::Unavailable("the upstream URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(["v1", "verification", "session"])
            .extend(segments);
        Ok(url)
    }
}

fn forwarded_headers(client: ClientContext<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // One entry, the client: signal-server's proxy setting reads the forwarded address, and
    // nothing a client wrote may reach it.
    if let Ok(value) = client.address.to_string().parse() {
        headers.insert("x-forwarded-for", value);
    }
    let pairs = [
        (USER_AGENT, client.user_agent),
        (ACCEPT_LANGUAGE, client.accept_language),
    ];
    for (name, value) in pairs {
        if let Some(Ok(value)) = value.map(str::parse) {
            headers.insert(name, value);
        }
    }
    headers
}

fn transport_error(error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        UpstreamError::Timeout
    } else if error.is_connect() {
        // The request never left: signal-server cannot have acted on it.
        UpstreamError::Unavailable(telemetry::describe(error))
    } else {
        UpstreamError::Unreadable(telemetry::describe(error))
    }
}

/// A session object from signal-server's answer, with an id it could have given.
fn parse_session(bytes: &[u8]) -> Result<UpstreamSession, UpstreamError> {
    let session: UpstreamSession = serde_json::from_slice(bytes)
        .map_err(|e| UpstreamError::Unreadable(format!("answer is not a session: {e}")))?;
    if !crate::domain::is_session_id(&session.id) {
        return Err(UpstreamError::Unreadable(
            "answer's session id is not one signal-server gives".into(),
        ));
    }
    Ok(session)
}

/// `Retry-After` in whole seconds, as signal-server writes it.
fn retry_after_seconds(headers: &HeaderMap) -> Option<u64> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(UpstreamError::Unreadable("the answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transport_errors_keep_their_cause_and_leave_the_session_out() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/v1/verification/session/SESSION-ID-7/code");
        let error = reqwest::get(url).await.expect_err("nothing listens");
        let text = transport_error(error).to_string();
        assert!(!text.contains("SESSION-ID-7"), "{text}");
        assert!(text.to_lowercase().contains("connect"), "{text}");
    }

    #[test]
    fn a_session_without_its_verified_field_is_not_a_session() {
        let complete = r#"{"id":"abc=","nextSms":0,"nextCall":null,
            "nextVerificationAttempt":null,"verified":false}"#;
        assert!(serde_json::from_str::<UpstreamSession>(complete).is_ok());
        assert!(serde_json::from_str::<UpstreamSession>(r#"{"id":"abc="}"#).is_err());
    }

    #[test]
    fn a_session_whose_id_signal_server_would_not_give_is_unusable() {
        let with_id = |id: &str| {
            format!(
                r#"{{"id":"{id}","nextSms":0,"nextCall":null,"nextVerificationAttempt":null,
                "allowedToRequestCode":true,"requestedInformation":[],"verified":false}}"#
            )
        };
        assert!(parse_session(with_id("XwlqntmPg3yBJ5uilkkK1w==").as_bytes()).is_ok());
        for id in ["", "../../etc/passwd", "a b", &"A".repeat(5000)] {
            let parsed = parse_session(with_id(id).as_bytes());
            assert!(
                matches!(parsed, Err(UpstreamError::Unreadable(_))),
                "{id:?}"
            );
        }
    }
}
