//! Faults: a locked or corrupted database, a killed process. The gate answers with a clear
//! status, lets nothing through, and loses nothing it acknowledged.

use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use serde_json::json;
use signal_gate::emulators::hcaptcha::{HcaptchaEmulator, TEST_SECRET};
use signal_gate::emulators::signal_server::SignalServerEmulator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::helpers::{base_vars, error_of, spawn_app_with, spread_number, SITEKEY};

const BINARY: &str = env!("CARGO_BIN_EXE_signal-gate");

#[tokio::test]
async fn a_locked_database_is_a_503_and_nothing_passes() {
    let app = spawn_app_with(&[("SIGNAL_GATE_DATABASE__BUSY_TIMEOUT", "300ms")]).await;
    let url = format!("sqlite://{}", app.database.display());
    let mut locker = SqliteConnectOptions::from_str(&url)
        .expect("url")
        .connect()
        .await
        .expect("open");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("lock");

    let response = app.register(&spread_number(1), "192.0.2.1").await;
    assert_eq!(
        error_of(response).await,
        (503, "storage_unavailable".into(), None)
    );
    assert_eq!(
        app.signal.sms_sent(),
        0,
        "nothing went out while storage failed"
    );

    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    locker.close().await.expect("close");
    assert_eq!(
        app.register(&spread_number(1), "192.0.2.2").await.status(),
        200
    );
}

#[test]
fn a_corrupted_database_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("gate.db");
    std::fs::write(
        &database,
        b"this is not a database, just text that looks nothing like one",
    )
    .expect("write");
    let output = Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .env("SIGNAL_GATE_UPSTREAM__URL", "http://127.0.0.1:1")
        .env("SIGNAL_GATE_HCAPTCHA__SECRET", TEST_SECRET)
        .env("SIGNAL_GATE_HCAPTCHA__SITEKEY", SITEKEY)
        .env(
            "SIGNAL_GATE_HCAPTCHA__VERIFY_URL",
            "http://127.0.0.1:1/siteverify",
        )
        .env(
            "SIGNAL_GATE_NUMBER_KEY",
            "a-number-key-of-at-least-thirty-two-chars",
        )
        .env("SIGNAL_GATE_LISTEN", "127.0.0.1:0")
        .env("SIGNAL_GATE_ADMIN__LISTEN", "127.0.0.1:0")
        .env(
            "SIGNAL_GATE_DATABASE__URL",
            format!("sqlite://{}", database.display()),
        )
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn start_serve(vars: &std::collections::HashMap<String, String>) -> Child {
    Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .envs(vars)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts")
}

async fn wait_for(http: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listening at {url}");
}

#[tokio::test]
async fn after_kill_9_every_acknowledged_cooldown_is_still_there() {
    let signal = SignalServerEmulator::start().expect("emulator");
    let hcaptcha = HcaptchaEmulator::start(TEST_SECRET, SITEKEY).expect("emulator");
    let dir = tempfile::tempdir().expect("dir");
    let mut vars = base_vars(
        &signal,
        &hcaptcha,
        &dir.path().join("gate.db").to_string_lossy(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("a")
        .port();
    vars.insert("SIGNAL_GATE_LISTEN".into(), format!("127.0.0.1:{port}"));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut first = start_serve(&vars);
    wait_for(&http, &url).await;
    // Traffic in flight while the process dies: the acknowledged ones must persist.
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let number = spread_number(i);
        let body = json!({"number": number, "captcha": hcaptcha.issue_token(SITEKEY, "localhost")});
        let sent = http
            .post(format!("{url}/v1/register"))
            .header("X-Forwarded-For", format!("10.7.{i}.1"))
            .json(&body)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status() == 200) {
            acknowledged.push(number);
        }
        if i == 30 {
            first.kill().expect("kill -9");
        }
    }
    let _ = first.wait();
    assert!(
        acknowledged.len() >= 25,
        "most requests were served before the kill"
    );

    let mut second = start_serve(&vars);
    wait_for(&http, &url).await;
    for (i, number) in acknowledged.iter().enumerate() {
        let body = json!({"number": number, "captcha": hcaptcha.issue_token(SITEKEY, "localhost")});
        let response = http
            .post(format!("{url}/v1/register"))
            .header("X-Forwarded-For", format!("10.6.{i}.1"))
            .json(&body)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 429, "cooldown of {i} survived");
    }
    second.kill().expect("stop");
    let _ = second.wait();
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight_and_refuses_new_ones() {
    let signal = SignalServerEmulator::start().expect("emulator");
    let hcaptcha = HcaptchaEmulator::start(TEST_SECRET, SITEKEY).expect("emulator");
    let dir = tempfile::tempdir().expect("dir");
    let mut vars = base_vars(
        &signal,
        &hcaptcha,
        &dir.path().join("gate.db").to_string_lossy(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("a")
        .port();
    vars.insert("SIGNAL_GATE_LISTEN".into(), format!("127.0.0.1:{port}"));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut gate = start_serve(&vars);
    wait_for(&http, &url).await;

    signal.set_mode(signal_gate::emulators::FaultMode::Slow { millis: 1500 });
    let body =
        json!({"number": spread_number(3), "captcha": hcaptcha.issue_token(SITEKEY, "localhost")});
    let in_flight = tokio::spawn(http.post(format!("{url}/v1/register")).json(&body).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &gate.id().to_string()])
        .status()
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let fresh = reqwest::Client::new()
        .post(format!("{url}/v1/register"))
        .json(&body)
        .send()
        .await;
    assert!(fresh.is_err(), "a new connection after SIGTERM is refused");
    let answer = in_flight
        .await
        .expect("task")
        .expect("the request in flight completes");
    assert_eq!(answer.status(), 200);
    let status = gate.wait().expect("exits");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "stopped within the grace period"
    );
}
