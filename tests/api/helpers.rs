//! `spawn_app()`: the real gate on port 0, a fresh SQLite file, both emulators, a manual clock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::Response;
use serde_json::{json, Value};
use signal_gate::clock::ManualClock;
use signal_gate::configuration::Settings;
use signal_gate::emulators::hcaptcha::{HcaptchaEmulator, TEST_SECRET, TEST_SITEKEY};
use signal_gate::emulators::signal_server::SignalServerEmulator;
use signal_gate::startup::Application;
use tempfile::TempDir;

pub const SITEKEY: &str = TEST_SITEKEY;
pub const NUMBER_KEY: &str = "test-number-key-of-thirty-two-characters";
/// A UK mobile number and two other writings of it.
pub const NUMBER: &str = "+447400123456";

pub struct TestApp {
    pub url: String,
    pub admin_url: String,
    pub http: reqwest::Client,
    pub signal: SignalServerEmulator,
    pub hcaptcha: HcaptchaEmulator,
    pub clock: Arc<ManualClock>,
    pub database: PathBuf,
    /// Variables the app was built with, to build it again on the same database.
    pub vars: HashMap<String, String>,
    _dir: Arc<TempDir>,
}

/// The variables of a test gate, before any test-specific overrides.
pub fn base_vars(
    signal: &SignalServerEmulator,
    hcaptcha: &HcaptchaEmulator,
    db: &str,
) -> HashMap<String, String> {
    [
        ("SIGNAL_GATE_LISTEN", "127.0.0.1:0".to_owned()),
        ("SIGNAL_GATE_ADMIN__LISTEN", "127.0.0.1:0".to_owned()),
        ("SIGNAL_GATE_WORKERS", "2".to_owned()),
        ("SIGNAL_GATE_UPSTREAM__URL", signal.url()),
        ("SIGNAL_GATE_UPSTREAM__TIMEOUT", "2s".to_owned()),
        ("SIGNAL_GATE_HCAPTCHA__SECRET", TEST_SECRET.to_owned()),
        ("SIGNAL_GATE_HCAPTCHA__SITEKEY", SITEKEY.to_owned()),
        ("SIGNAL_GATE_HCAPTCHA__VERIFY_URL", hcaptcha.verify_url()),
        ("SIGNAL_GATE_HCAPTCHA__TIMEOUT", "1s".to_owned()),
        ("SIGNAL_GATE_DATABASE__URL", format!("sqlite://{db}")),
        ("SIGNAL_GATE_NUMBER_KEY", NUMBER_KEY.to_owned()),
        // Tests speak for many clients through one loopback peer.
        ("SIGNAL_GATE_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A gate with some variables changed.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let signal = SignalServerEmulator::start().expect("signal-server emulator");
    let hcaptcha = HcaptchaEmulator::start(TEST_SECRET, SITEKEY).expect("hCaptcha emulator");
    let dir = Arc::new(tempfile::tempdir().expect("temporary directory"));
    let database = dir.path().join("data").join("gate.db");
    let mut vars = base_vars(&signal, &hcaptcha, &database.to_string_lossy());
    for (name, value) in overrides {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    let clock = Arc::new(ManualClock::starting_now());
    let (url, admin_url) = launch(&vars, Arc::clone(&clock)).await;
    TestApp {
        url,
        admin_url,
        http: reqwest::Client::new(),
        signal,
        hcaptcha,
        clock,
        database,
        vars,
        _dir: dir,
    }
}

async fn launch(vars: &HashMap<String, String>, clock: Arc<ManualClock>) -> (String, String) {
    let settings = Settings::from_env(vars.clone()).expect("test settings");
    let app = Application::build_with_clock(settings, clock)
        .await
        .expect("gate builds");
    let urls = (
        format!("http://127.0.0.1:{}", app.port()),
        format!("http://127.0.0.1:{}", app.admin_port()),
    );
    tokio::spawn(app.run_until_stopped());
    urls
}

impl TestApp {
    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .expect("scraped")
            .text()
            .await
            .expect("text")
    }

    /// A second gate on the same database, the same emulators and the same clock: a restart.
    pub async fn restart(&self) -> TestApp {
        let (url, admin_url) = launch(&self.vars, Arc::clone(&self.clock)).await;
        TestApp {
            url,
            admin_url,
            http: reqwest::Client::new(),
            signal: self.signal.clone(),
            hcaptcha: self.hcaptcha.clone(),
            clock: Arc::clone(&self.clock),
            database: self.database.clone(),
            vars: self.vars.clone(),
            _dir: Arc::clone(&self._dir),
        }
    }

    /// A fresh captcha token, as a client gets by solving the widget.
    pub fn token(&self) -> String {
        self.hcaptcha.issue_token(SITEKEY, "localhost")
    }

    pub async fn post(&self, path: &str, body: &Value, client_ip: &str) -> Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("X-Forwarded-For", client_ip)
            .json(body)
            .send()
            .await
            .expect("request reaches the gate")
    }

    /// Register with a fresh token.
    pub async fn register(&self, number: &str, client_ip: &str) -> Response {
        let body = json!({"number": number, "captcha": self.token()});
        self.post("/v1/register", &body, client_ip).await
    }

    pub async fn verify(&self, session_id: &str, number: &str, code: &str, ip: &str) -> Response {
        let body = json!({"sessionId": session_id, "number": number, "code": code});
        self.post("/v1/verify", &body, ip).await
    }

    /// Register and return the session id, failing the test otherwise.
    pub async fn session_for(&self, number: &str, client_ip: &str) -> String {
        let response = self.register(number, client_ip).await;
        assert_eq!(response.status(), 200, "register must pass");
        let body: Value = response.json().await.expect("json");
        body["sessionId"].as_str().expect("session id").to_owned()
    }

    /// The last code the emulator delivered to a number.
    pub fn last_code(&self, e164: &str) -> String {
        self.signal
            .inbox(e164)
            .last()
            .cloned()
            .expect("a code was delivered")
    }
}

/// Reads an error answer: status, code, and the Retry-After header.
pub async fn error_of(response: Response) -> (u16, String, Option<u64>) {
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: Value = response.json().await.expect("error bodies are JSON");
    let code = body["code"].as_str().expect("error code").to_owned();
    if status == 429 {
        assert_eq!(body["retryAfter"].as_u64(), retry, "body and header agree");
        assert!(
            retry.is_some_and(|r| r >= 1),
            "429 carries Retry-After >= 1"
        );
    }
    (status, code, retry)
}

/// The `i`th of many valid UK mobile numbers that share neither a prefix nor a hundred-block,
/// so that only the rule a test is about can refuse them.
pub fn spread_number(i: usize) -> String {
    (0..600)
        .map(|step| 400 + (i * 37 + step) % 600)
        .map(|prefix| format!("+447{prefix:03}{:06}", (i * 7919 + 123_457) % 1_000_000))
        .find(|candidate| {
            signal_gate::domain::PhoneNumber::parse(candidate)
                .is_ok_and(|n| n.kind() == phonenumber::Type::Mobile)
        })
        .expect("a valid UK mobile number")
}

/// The `signal-gate` binary built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_signal-gate");

/// Every variable `serve` requires, pointing at nothing, for tests that stop at start-up.
pub fn unreachable_serve_vars() -> Vec<(&'static str, String)> {
    vec![
        ("SIGNAL_GATE_UPSTREAM__URL", "http://127.0.0.1:1".into()),
        ("SIGNAL_GATE_HCAPTCHA__SECRET", TEST_SECRET.into()),
        ("SIGNAL_GATE_HCAPTCHA__SITEKEY", SITEKEY.into()),
        (
            "SIGNAL_GATE_HCAPTCHA__VERIFY_URL",
            "http://127.0.0.1:1/siteverify".into(),
        ),
        (
            "SIGNAL_GATE_NUMBER_KEY",
            "a-number-key-of-at-least-thirty-two-chars".into(),
        ),
        ("SIGNAL_GATE_LISTEN", "127.0.0.1:0".into()),
        ("SIGNAL_GATE_ADMIN__LISTEN", "127.0.0.1:0".into()),
    ]
}

/// `signal-gate serve` as a real process on a fixed free port, in front of fresh emulators,
/// with its database in a temporary directory. Start it (again) with [`ServeProcess::spawn`].
pub struct ServeProcess {
    pub url: String,
    pub vars: HashMap<String, String>,
    pub signal: SignalServerEmulator,
    pub hcaptcha: HcaptchaEmulator,
    pub database: PathBuf,
    _dir: TempDir,
}

impl ServeProcess {
    pub fn prepare() -> ServeProcess {
        let signal = SignalServerEmulator::start().expect("signal-server emulator");
        let hcaptcha = HcaptchaEmulator::start(TEST_SECRET, SITEKEY).expect("hCaptcha emulator");
        let dir = tempfile::tempdir().expect("temporary directory");
        let database = dir.path().join("state").join("gate.db");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut vars = base_vars(&signal, &hcaptcha, &database.to_string_lossy());
        vars.insert("SIGNAL_GATE_LISTEN".into(), format!("127.0.0.1:{port}"));
        let url = format!("http://127.0.0.1:{port}");
        ServeProcess {
            url,
            vars,
            signal,
            hcaptcha,
            database,
            _dir: dir,
        }
    }

    /// Starts the process and waits until it listens.
    pub async fn spawn(&self, output: fn() -> std::process::Stdio) -> std::process::Child {
        let mut child = std::process::Command::new(BINARY)
            .arg("serve")
            .env_clear()
            .envs(&self.vars)
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("serve starts");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(&self.url).send().await.is_ok() {
                return child;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nothing listening at {}", self.url);
    }

    /// A register request with a fresh token, as one client address.
    pub async fn register(&self, number: &str, client_ip: &str) -> reqwest::Result<Response> {
        let token = self.hcaptcha.issue_token(SITEKEY, "localhost");
        reqwest::Client::new()
            .post(format!("{}/v1/register", self.url))
            .header("X-Forwarded-For", client_ip)
            .json(&json!({"number": number, "captcha": token}))
            .send()
            .await
    }
}

/// The URL of a loopback port nothing listens on.
pub fn unreachable_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = closed.local_addr().expect("its address").port();
    drop(closed);
    format!("http://127.0.0.1:{port}")
}

/// Rows in a table of the gate's database file, as a second, read-only connection sees them.
pub async fn stored_rows(file: &std::path::Path, table: &str) -> i64 {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
            .expect("url")
            .read_only(true);
    let mut connection = options.connect().await.expect("a second connection");
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut connection)
        .await
        .expect("counted");
    connection.close().await.expect("closed");
    count
}
