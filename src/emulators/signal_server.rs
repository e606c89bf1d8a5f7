//! signal-server's verification-session API stand-in (UPSTREAM.md section 2), as the
//! open-source build without spam-filter behaves.
//!
//! Sessions start with `requestedInformation: ["captcha"]`; a PATCH with a captcha whose site key
//! is `noop` and action `registration` clears it (any other site key is 400, as upstream). A code
//! request writes a six-digit code to the inbox instead of sending an SMS. A wrong code is 200
//! with `verified: false`; after five wrong codes the session answers 429 with
//! `nextVerificationAttempt: null`. Numbers must already be normalized E.164 (422 otherwise), and
//! old eight-digit Benin numbers get 499.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Path};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::hcaptcha::fault_answer;
use super::FaultMode;

/// Wrong codes a session takes before it is spent.
const MAX_WRONG_CODES: u32 = 5;
/// Captcha PATCHes per session, the size of signal-server's `verificationCaptcha` bucket.
const MAX_CAPTCHA_ATTEMPTS: u32 = 10;

struct Session {
    number: String,
    requested_information: Vec<&'static str>,
    code: Option<String>,
    sms_sent: u32,
    next_sms_at: Instant,
    wrong_codes: u32,
    captcha_attempts: u32,
    verified: bool,
}

/// Calls per endpoint, for tests that prove what reached the server.
#[derive(Default)]
struct Counters {
    create: AtomicU64,
    patch: AtomicU64,
    request_code: AtomicU64,
    submit_code: AtomicU64,
    /// WebSocket request frames for the verification API, and all other frames received.
    ws_verification: AtomicU64,
    ws_other: AtomicU64,
    /// WebSocket connections opened.
    ws_connections: AtomicU64,
}

struct State {
    sessions: Mutex<HashMap<String, Session>>,
    inbox: Mutex<HashMap<String, Vec<String>>>,
    forwarded_for: Mutex<Vec<String>>,
    /// Header names of the last WebSocket upgrade, lower case.
    upgrade_headers: Mutex<Vec<String>>,
    mode: Mutex<FaultMode>,
    counters: Counters,
}

/// A running signal-server stand-in.
#[derive(Clone)]
pub struct SignalServerEmulator {
    state: Arc<State>,
    port: u16,
    server: ServerHandle,
}

impl SignalServerEmulator {
    /// Starts on a free loopback port.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start() -> std::io::Result<SignalServerEmulator> {
        Self::start_on(super::loopback_listener()?)
    }

    /// As [`SignalServerEmulator::start`], on a given listener.
    ///
    /// # Errors
    /// When the server cannot start.
    pub fn start_on(listener: std::net::TcpListener) -> std::io::Result<SignalServerEmulator> {
        let state = Arc::new(State {
            sessions: Mutex::new(HashMap::new()),
            inbox: Mutex::new(HashMap::new()),
            forwarded_for: Mutex::new(Vec::new()),
            upgrade_headers: Mutex::new(Vec::new()),
            mode: Mutex::new(FaultMode::Normal),
            counters: Counters::default(),
        });
        let port = listener.local_addr()?.port();
        let data = Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().error_handler(|error, _| {
                    let status = StatusCode::BAD_REQUEST;
                    actix_web::error::InternalError::from_response(
                        error,
                        HttpResponse::build(status).finish(),
                    )
                    .into()
                }))
                .service(
                    web::scope("/v1/verification/session")
                        .route("", web::post().to(create_session))
                        .route("/{id}", web::patch().to(update_session))
                        .route("/{id}", web::get().to(get_session))
                        .route("/{id}/code", web::post().to(request_code))
                        .route("/{id}/code", web::put().to(submit_code)),
                )
                .route("/v1/websocket/", web::get().to(websocket))
                .route("/emulator/inbox/{number}", web::get().to(read_inbox))
                .route("/emulator/mode", web::post().to(set_mode))
                .route("/emulator/stats", web::get().to(stats))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(SignalServerEmulator {
            state,
            port,
            server: handle,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The codes sent to a number, oldest first.
    pub fn inbox(&self, e164: &str) -> Vec<String> {
        lock(&self.state.inbox)
            .get(e164)
            .cloned()
            .unwrap_or_default()
    }

    /// Every code sent, to any number.
    pub fn sms_sent(&self) -> usize {
        lock(&self.state.inbox).values().map(Vec::len).sum()
    }

    /// The `X-Forwarded-For` values seen, in arrival order.
    pub fn forwarded_for(&self) -> Vec<String> {
        lock(&self.state.forwarded_for).clone()
    }

    /// Calls that reached each verification endpoint: create, patch, request code, submit code.
    pub fn calls(&self) -> [u64; 4] {
        let c = &self.state.counters;
        [&c.create, &c.patch, &c.request_code, &c.submit_code].map(|n| n.load(Ordering::SeqCst))
    }

    pub fn set_mode(&self, mode: FaultMode) {
        *lock(&self.state.mode) = mode;
    }

    /// Header names of the last WebSocket upgrade this server accepted, lower case.
    pub fn upgrade_headers(&self) -> Vec<String> {
        lock(&self.state.upgrade_headers).clone()
    }

    /// WebSocket connections opened to this server.
    pub fn websocket_connections(&self) -> u64 {
        self.state.counters.ws_connections.load(Ordering::SeqCst)
    }

    /// WebSocket frames received: verification requests, and everything else.
    pub fn websocket_frames(&self) -> [u64; 2] {
        let c = &self.state.counters;
        [&c.ws_verification, &c.ws_other].map(|n| n.load(Ordering::SeqCst))
    }

    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn note_forwarded_for(&self, request: &HttpRequest) {
        let forwarded = request.headers().get_all("x-forwarded-for");
        let seen: Vec<String> = forwarded
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        lock(&self.forwarded_for).push(seen.join(" | "));
    }

    /// Notes the caller and applies the fault mode; `Some` is the answer to give instead.
    async fn intake(&self, request: &HttpRequest, counter: &AtomicU64) -> Option<HttpResponse> {
        counter.fetch_add(1, Ordering::SeqCst);
        self.note_forwarded_for(request);
        let mode = lock(&self.mode).clone();
        let is_code_step = std::ptr::eq(counter, &self.counters.request_code)
            || std::ptr::eq(counter, &self.counters.submit_code);
        if let (FaultMode::SlowCodes { millis }, true) = (&mode, is_code_step) {
            tokio::time::sleep(Duration::from_millis(*millis)).await;
        }
        fault_answer(&mode).await
    }
}

fn session_json(id: &str, session: &Session) -> Value {
    let now = Instant::now();
    let next_sms = session.next_sms_at.saturating_duration_since(now).as_secs();
    let can_check = session.code.is_some() && session.wrong_codes < MAX_WRONG_CODES;
    json!({
        "id": id,
        "nextSms": if session.verified { Value::Null } else { json!(next_sms) },
        "nextCall": open(session.sms_sent > 0 && !session.verified, next_sms),
        "nextVerificationAttempt": open(can_check && !session.verified, 0),
        "allowedToRequestCode": session.requested_information.is_empty(),
        "requestedInformation": session.requested_information,
        "verified": session.verified,
    })
}

/// A wait in seconds, or `null` when the action is not possible at all.
fn open(possible: bool, wait: u64) -> Value {
    if possible {
        json!(wait)
    } else {
        Value::Null
    }
}

/// URL-safe base64 with padding, as signal-server encodes session ids.
fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

fn is_session_id(id: &str) -> bool {
    base64::engine::general_purpose::URL_SAFE.decode(id).is_ok()
}

/// signal-server's `@E164` rule: `+`, parses, and is already in its own E.164 form.
fn is_normalized_e164(number: &str) -> bool {
    number.starts_with('+')
        && phonenumber::parse(None, number)
            .map(|parsed| parsed.format().mode(phonenumber::Mode::E164).to_string() == number)
            .unwrap_or(false)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    number: Option<String>,
}

async fn create_session(
    state: Data<State>,
    request: HttpRequest,
    body: web::Json<CreateBody>,
) -> HttpResponse {
    if let Some(answer) = state.intake(&request, &state.counters.create).await {
        return answer;
    }
    let number = body.into_inner().number.unwrap_or_default();
    if !is_normalized_e164(&number) {
        return HttpResponse::UnprocessableEntity().finish();
    }
    if number.starts_with("+229") && number.len() == 12 {
        return HttpResponse::build(StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST))
            .finish();
    }
    let id = new_session_id();
    let session = Session {
        number,
        requested_information: vec!["captcha"],
        code: None,
        sms_sent: 0,
        next_sms_at: Instant::now(),
        wrong_codes: 0,
        captcha_attempts: 0,
        verified: false,
    };
    let answer = session_json(&id, &session);
    lock(&state.sessions).insert(id, session);
    HttpResponse::Ok().json(answer)
}

/// Finds a session, or answers as signal-server does for a bad or unknown id.
fn with_session<F>(state: &State, id: &str, f: F) -> HttpResponse
where
    F: FnOnce(&str, &mut Session) -> HttpResponse,
{
    if !is_session_id(id) {
        return HttpResponse::UnprocessableEntity().body("invalid session id");
    }
    match lock(&state.sessions).get_mut(id) {
        Some(session) => f(id, session),
        None => HttpResponse::NotFound().finish(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    captcha: Option<String>,
}

async fn update_session(
    state: Data<State>,
    request: HttpRequest,
    id: Path<String>,
    body: web::Json<UpdateBody>,
) -> HttpResponse {
    if let Some(answer) = state.intake(&request, &state.counters.patch).await {
        return answer;
    }
    with_session(&state, &id, |id, session| {
        let Some(captcha) = body.captcha.as_deref() else {
            return HttpResponse::Ok().json(session_json(id, session));
        };
        session.captcha_attempts += 1;
        if session.captcha_attempts > MAX_CAPTCHA_ATTEMPTS {
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "30"))
                .json(session_json(id, session));
        }
        let parts: Vec<&str> = captcha.splitn(4, '.').collect();
        if parts.len() < 4 || parts[1] != "noop" || parts[2] != "registration" {
            return HttpResponse::BadRequest().finish();
        }
        session.requested_information.clear();
        HttpResponse::Ok().json(session_json(id, session))
    })
}

async fn get_session(state: Data<State>, id: Path<String>) -> HttpResponse {
    with_session(&state, &id, |id, session| {
        HttpResponse::Ok().json(session_json(id, session))
    })
}

#[derive(Deserialize)]
struct CodeRequestBody {
    transport: Option<String>,
    client: Option<String>,
}

async fn request_code(
    state: Data<State>,
    request: HttpRequest,
    id: Path<String>,
    body: web::Json<CodeRequestBody>,
) -> HttpResponse {
    if let Some(answer) = state.intake(&request, &state.counters.request_code).await {
        return answer;
    }
    let (Some(transport), Some(_client)) = (&body.transport, &body.client) else {
        return HttpResponse::UnprocessableEntity().finish();
    };
    if transport != "sms" && transport != "voice" {
        return HttpResponse::UnprocessableEntity().finish();
    }
    let sent = with_session(&state, &id, |id, session| {
        if session.verified || !session.requested_information.is_empty() {
            return HttpResponse::Conflict().json(session_json(id, session));
        }
        // A voice call needs an SMS first, as registration-service requires.
        if transport == "voice" && session.sms_sent == 0 {
            return HttpResponse::build(StatusCode::from_u16(418).unwrap_or(StatusCode::CONFLICT))
                .json(session_json(id, session));
        }
        let wait = session
            .next_sms_at
            .saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", wait.as_secs().max(1).to_string()))
                .json(session_json(id, session));
        }
        let code = format!("{:06}", rand::rng().random_range(0..1_000_000));
        session.code = Some(code);
        session.sms_sent += 1;
        session.next_sms_at =
            Instant::now() + Duration::from_secs(60 * u64::from(session.sms_sent));
        HttpResponse::Ok().json(session_json(id, session))
    });
    if sent.status().is_success() {
        deliver(&state, &id);
    }
    sent
}

/// Writes the session's current code to its number's inbox.
fn deliver(state: &State, id: &str) {
    let delivery = lock(&state.sessions)
        .get(id)
        .and_then(|s| Some((s.number.clone(), s.code.clone()?)));
    if let Some((number, code)) = delivery {
        lock(&state.inbox).entry(number).or_default().push(code);
    }
}

#[derive(Deserialize)]
struct SubmitBody {
    code: Option<String>,
}

async fn submit_code(
    state: Data<State>,
    request: HttpRequest,
    id: Path<String>,
    body: web::Json<SubmitBody>,
) -> HttpResponse {
    if let Some(answer) = state.intake(&request, &state.counters.submit_code).await {
        return answer;
    }
    let Some(code) = body.code.as_deref().filter(|c| !c.trim().is_empty()) else {
        return HttpResponse::UnprocessableEntity().finish();
    };
    with_session(&state, &id, |id, session| {
        if session.verified || session.code.is_none() {
            return HttpResponse::Conflict().json(session_json(id, session));
        }
        if session.wrong_codes >= MAX_WRONG_CODES {
            return HttpResponse::TooManyRequests().json(session_json(id, session));
        }
        if session.code.as_deref() == Some(code) {
            session.verified = true;
        } else {
            session.wrong_codes += 1;
        }
        HttpResponse::Ok().json(session_json(id, session))
    })
}

async fn read_inbox(state: Data<State>, number: Path<String>) -> HttpResponse {
    let codes = lock(&state.inbox)
        .get(number.as_str())
        .cloned()
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({"codes": codes}))
}

async fn set_mode(state: Data<State>, body: web::Json<FaultMode>) -> HttpResponse {
    *lock(&state.mode) = body.into_inner();
    HttpResponse::NoContent().finish()
}

async fn stats(state: Data<State>) -> HttpResponse {
    let c = &state.counters;
    let count = |n: &AtomicU64| n.load(Ordering::SeqCst);
    let sms: usize = lock(&state.inbox).values().map(Vec::len).sum();
    HttpResponse::Ok().json(json!({
        "createSession": count(&c.create),
        "updateSession": count(&c.patch),
        "requestCode": count(&c.request_code),
        "submitCode": count(&c.submit_code),
        "smsSent": sms,
        "websocketConnections": count(&c.ws_connections),
        "forwardedFor": *lock(&state.forwarded_for),
    }))
}

/// `/v1/websocket/`: signal-server's WebSocket. Credentials, when presented (an `Authorization`
/// header, or `login` and `password` in the query), are taken as valid, and such a socket gets
/// one pushed request on connect (the empty-queue notice the real server sends once it has
/// delivered stored messages); an unauthenticated socket gets nothing unasked, as on the real
/// server. Every request frame is answered with 200 (verification requests included, as the
/// real server would) and counted. A frame that does not parse closes the socket with 1007.
async fn websocket(
    state: Data<State>,
    request: HttpRequest,
    body: web::Payload,
) -> actix_web::Result<HttpResponse> {
    use crate::websocket::frames::WebSocketMessage;
    let (response, mut session, mut stream) = actix_ws::handle(&request, body)?;
    let state = state.into_inner();
    state.counters.ws_connections.fetch_add(1, Ordering::SeqCst);
    state.note_forwarded_for(&request);
    *lock(&state.upgrade_headers) = request
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect();
    let authenticated = presents_credentials(&request);
    actix_web::rt::spawn(async move {
        use futures_util::StreamExt;
        let push = WebSocketMessage::request(1, "PUT", "/api/v1/queue/empty", None);
        if authenticated && session.binary(push.to_bytes()).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = stream.next().await {
            match message {
                actix_ws::Message::Binary(bytes) => {
                    let Ok(frame) = WebSocketMessage::parse(&bytes) else {
                        let code = actix_ws::CloseCode::from(1007);
                        let reason = actix_ws::CloseReason {
                            code,
                            description: None,
                        };
                        let _ = session.close(Some(reason)).await;
                        return;
                    };
                    let request = frame.request.clone().filter(|_| frame.is_request());
                    let path = request
                        .as_ref()
                        .and_then(|r| r.path.clone())
                        .unwrap_or_default();
                    let counters = &state.counters;
                    if request.is_some() && crate::domain::is_verification_path(&path) {
                        counters.ws_verification.fetch_add(1, Ordering::SeqCst);
                    } else {
                        counters.ws_other.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Some(id) = request.and_then(|r| r.id) {
                        let answer = WebSocketMessage::response(id, 200, "OK", b"{}".to_vec());
                        if session.binary(answer.to_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                actix_ws::Message::Ping(bytes) if session.pong(&bytes).await.is_err() => return,
                actix_ws::Message::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
                _ => {}
            }
        }
    });
    Ok(response)
}

/// Whether a WebSocket upgrade presents credentials, read as signal-server reads them.
fn presents_credentials(request: &HttpRequest) -> bool {
    if request.headers().contains_key("authorization") {
        return true;
    }
    let query = request.uri().query().unwrap_or_default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let has = |name: &str| pairs.iter().any(|(key, _)| key == name);
    has("login") && has("password")
}
