//! hCaptcha siteverify stand-in (UPSTREAM.md section 8).
//!
//! Form-encoded `secret`, `response`, `remoteip`, `sitekey`; answers `success`, `challenge_ts`,
//! `hostname`, `credit`, `error-codes`, and `score` for the Enterprise test key. Tokens issued by
//! [`HcaptchaEmulator::issue_token`] (or `POST /emulator/issue`) are single-use and expire after
//! the lifetime. The three published test tokens always pass with the test secret, as the real
//! service does, and get `not-using-dummy-secret` with any other secret.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{App, HttpResponse, HttpServer};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::FaultMode;

/// The published test secret.
pub const TEST_SECRET: &str = "0x0000000000000000000000000000000000000000";
/// The published Publisher/Pro test site key and its token.
pub const TEST_SITEKEY: &str = "10000000-ffff-ffff-ffff-000000000001";
pub const TEST_TOKEN: &str = "10000000-aaaa-bbbb-cccc-000000000001";
/// Enterprise test keys: a safe user (low score) and a detected bot (high score).
pub const TEST_SITEKEY_SAFE: &str = "20000000-ffff-ffff-ffff-000000000002";
pub const TEST_TOKEN_SAFE: &str = "20000000-aaaa-bbbb-cccc-000000000002";
pub const TEST_SITEKEY_BOT: &str = "30000000-ffff-ffff-ffff-000000000003";
pub const TEST_TOKEN_BOT: &str = "30000000-aaaa-bbbb-cccc-000000000003";
/// hCaptcha's default token lifetime.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(120);

struct IssuedToken {
    sitekey: String,
    hostname: String,
    issued_at: SystemTime,
    used: bool,
}

struct State {
    /// Secrets and the site keys registered to each.
    accounts: HashMap<String, Vec<String>>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    mode: Mutex<FaultMode>,
    calls: AtomicU64,
    last_remoteip: Mutex<Option<String>>,
}

/// A running siteverify stand-in.
#[derive(Clone)]
pub struct HcaptchaEmulator {
    state: Arc<State>,
    port: u16,
    server: ServerHandle,
}

impl HcaptchaEmulator {
    /// Starts on a free loopback port, accepting the test secret and `secret` with `sitekey`.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start(secret: &str, sitekey: &str) -> std::io::Result<HcaptchaEmulator> {
        Self::start_on(super::loopback_listener()?, secret, sitekey)
    }

    /// As [`HcaptchaEmulator::start`], on a given listener.
    ///
    /// # Errors
    /// When the server cannot start.
    pub fn start_on(
        listener: std::net::TcpListener,
        secret: &str,
        sitekey: &str,
    ) -> std::io::Result<HcaptchaEmulator> {
        let test_keys = vec![TEST_SITEKEY, TEST_SITEKEY_SAFE, TEST_SITEKEY_BOT];
        let mut accounts: HashMap<String, Vec<String>> = HashMap::from([(
            TEST_SECRET.to_owned(),
            test_keys.into_iter().map(Into::into).collect(),
        )]);
        accounts
            .entry(secret.to_owned())
            .or_default()
            .push(sitekey.to_owned());
        let state = Arc::new(State {
            accounts,
            tokens: Mutex::new(HashMap::new()),
            mode: Mutex::new(FaultMode::Normal),
            calls: AtomicU64::new(0),
            last_remoteip: Mutex::new(None),
        });
        let port = listener.local_addr()?.port();
        let data = Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/siteverify", web::post().to(siteverify))
                .route("/emulator/issue", web::post().to(issue))
                .route("/emulator/mode", web::post().to(set_mode))
                .route("/emulator/stats", web::get().to(stats))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(HcaptchaEmulator {
            state,
            port,
            server: handle,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn verify_url(&self) -> String {
        format!("http://127.0.0.1:{}/siteverify", self.port)
    }

    /// A fresh single-use token, as a client gets by solving the widget.
    pub fn issue_token(&self, sitekey: &str, hostname: &str) -> String {
        self.state.issue(sitekey, hostname, SystemTime::now())
    }

    /// A token that was solved `age` ago.
    pub fn issue_token_aged(&self, sitekey: &str, hostname: &str, age: Duration) -> String {
        self.state.issue(sitekey, hostname, SystemTime::now() - age)
    }

    pub fn set_mode(&self, mode: FaultMode) {
        *lock(&self.state.mode) = mode;
    }

    /// How many siteverify calls arrived.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// The `remoteip` of the last siteverify call.
    pub fn last_remoteip(&self) -> Option<String> {
        lock(&self.state.last_remoteip).clone()
    }

    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn issue(&self, sitekey: &str, hostname: &str, issued_at: SystemTime) -> String {
        let token = format!("E1_{}", Alphanumeric.sample_string(&mut rand::rng(), 48));
        let record = IssuedToken {
            sitekey: sitekey.to_owned(),
            hostname: hostname.to_owned(),
            issued_at,
            used: false,
        };
        lock(&self.tokens).insert(token.clone(), record);
        token
    }

    fn verify(&self, form: &VerifyForm) -> Value {
        let Some(secret) = form.secret.as_deref().filter(|s| !s.is_empty()) else {
            return failure("missing-input-secret");
        };
        let Some(keys) = self.accounts.get(secret) else {
            return failure("invalid-input-secret");
        };
        if form.sitekey.as_ref().is_some_and(|k| !keys.contains(k)) {
            return failure("sitekey-secret-mismatch");
        }
        let Some(token) = form.response.as_deref().filter(|s| !s.is_empty()) else {
            return failure("missing-input-response");
        };
        if let Some(ip) = &form.remoteip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return failure("invalid-remoteip");
            }
        }
        match test_token_score(token) {
            Some(_) if secret != TEST_SECRET => failure("not-using-dummy-secret"),
            // Each test site key passes only its own test token.
            Some(_)
                if form
                    .sitekey
                    .as_deref()
                    .is_some_and(|k| k.get(..8) != token.get(..8)) =>
            {
                failure("not-using-dummy-passcode")
            }
            Some(score) => success("dummy-key-pass", SystemTime::now(), score),
            None => self.verify_issued(token, form.sitekey.as_deref()),
        }
    }

    fn verify_issued(&self, token: &str, sitekey: Option<&str>) -> Value {
        let mut tokens = lock(&self.tokens);
        let Some(issued) = tokens.get_mut(token) else {
            return failure("invalid-input-response");
        };
        if issued.used {
            return failure("already-seen-response");
        }
        issued.used = true;
        let age = SystemTime::now()
            .duration_since(issued.issued_at)
            .unwrap_or_default();
        if age > TOKEN_LIFETIME {
            return failure("expired-input-response");
        }
        if sitekey.is_some_and(|key| key != issued.sitekey) {
            return failure("invalid-input-response");
        }
        success(&issued.hostname, issued.issued_at, None)
    }
}

/// The Enterprise score of a published test token; `Some(None)` for the plain test token.
fn test_token_score(token: &str) -> Option<Option<f64>> {
    match token {
        TEST_TOKEN => Some(None),
        TEST_TOKEN_SAFE => Some(Some(0.1)),
        TEST_TOKEN_BOT => Some(Some(0.9)),
        _ => None,
    }
}

fn failure(code: &str) -> Value {
    json!({"success": false, "error-codes": [code]})
}

fn success(hostname: &str, solved_at: SystemTime, score: Option<f64>) -> Value {
    let seconds = solved_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let challenge_ts = OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    let mut answer = json!({
        "success": true,
        "challenge_ts": challenge_ts,
        "hostname": hostname,
        "credit": false,
    });
    if let Some(score) = score {
        answer["score"] = json!(score);
        answer["score_reason"] = json!([]);
    }
    answer
}

#[derive(Deserialize)]
struct VerifyForm {
    secret: Option<String>,
    response: Option<String>,
    remoteip: Option<String>,
    sitekey: Option<String>,
}

async fn siteverify(state: Data<State>, body: web::Bytes) -> HttpResponse {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let mode = lock(&state.mode).clone();
    if let Some(answer) = fault_answer(&mode).await {
        return answer;
    }
    let Ok(form) = serde_urlencoded::from_bytes::<VerifyForm>(&body) else {
        return HttpResponse::Ok().json(failure("bad-request"));
    };
    lock(&state.last_remoteip).clone_from(&form.remoteip);
    let status = match mode {
        FaultMode::NormalBodyWithStatus { status } => StatusCode::from_u16(status).ok(),
        _ => None,
    };
    HttpResponse::build(status.unwrap_or(StatusCode::OK)).json(state.verify(&form))
}

/// The answer a fault mode gives instead of the normal one, after any delay it asks for.
pub(super) async fn fault_answer(mode: &FaultMode) -> Option<HttpResponse> {
    match mode {
        FaultMode::Normal
        | FaultMode::SlowCodes { .. }
        | FaultMode::NormalBodyWithStatus { .. } => None,
        FaultMode::Slow { millis } => {
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            None
        }
        FaultMode::Fail { status } => {
            let status = actix_web::http::StatusCode::from_u16(*status)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
            Some(HttpResponse::build(status).body("emulated failure"))
        }
        FaultMode::Garbage => Some(HttpResponse::Ok().body("<html>not json</html>")),
        FaultMode::RateLimited { retry_after } => {
            let mut answer = HttpResponse::TooManyRequests();
            if let Some(secs) = retry_after {
                answer.insert_header(("Retry-After", secs.to_string()));
            }
            Some(answer.finish())
        }
        FaultMode::Oversized => Some(HttpResponse::Ok().body(vec![b'{'; 1 << 20])),
    }
}

#[derive(Deserialize)]
struct IssueRequest {
    sitekey: String,
    #[serde(default = "default_hostname")]
    hostname: String,
    /// Seconds since the widget was solved, for expiry tests.
    #[serde(default)]
    age: u64,
}

fn default_hostname() -> String {
    "localhost".to_owned()
}

async fn issue(state: Data<State>, body: web::Json<IssueRequest>) -> HttpResponse {
    let at = SystemTime::now() - Duration::from_secs(body.age);
    HttpResponse::Ok().json(json!({"token": state.issue(&body.sitekey, &body.hostname, at)}))
}

async fn set_mode(state: Data<State>, body: web::Json<FaultMode>) -> HttpResponse {
    *lock(&state.mode) = body.into_inner();
    HttpResponse::NoContent().finish()
}

async fn stats(state: Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "calls": state.calls.load(Ordering::SeqCst),
        "lastRemoteip": *lock(&state.last_remoteip),
    }))
}
