//! Faults: a locked or corrupted database, a killed process. The gate answers with a clear
//! status, lets nothing through, and loses nothing it acknowledged.

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::helpers::{
    error_of, spawn_app_with, spread_number, unreachable_serve_vars, ServeProcess, BINARY, SITEKEY,
};

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
        .envs(unreachable_serve_vars())
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

#[tokio::test]
async fn after_kill_9_every_acknowledged_cooldown_is_still_there() {
    let serve = ServeProcess::prepare();
    let mut first = serve.spawn(Stdio::null).await;
    // Traffic in flight while the process dies: the acknowledged ones must persist.
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let number = spread_number(i);
        let sent = serve.register(&number, &format!("10.7.{i}.1")).await;
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

    let mut second = serve.spawn(Stdio::null).await;
    for (i, number) in acknowledged.iter().enumerate() {
        let response = serve
            .register(number, &format!("10.6.{i}.1"))
            .await
            .expect("answered");
        assert_eq!(response.status(), 429, "cooldown of {i} survived");
    }
    second.kill().expect("stop");
    let _ = second.wait();
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight_and_refuses_new_ones() {
    let serve = ServeProcess::prepare();
    let mut gate = serve.spawn(Stdio::null).await;
    serve
        .signal
        .set_mode(signal_gate::emulators::FaultMode::Slow { millis: 1500 });
    let in_flight = {
        let token = serve.hcaptcha.issue_token(SITEKEY, "localhost");
        let body = json!({"number": spread_number(3), "captcha": token});
        tokio::spawn(
            reqwest::Client::new()
                .post(format!("{}/v1/register", serve.url))
                .json(&body)
                .send(),
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &gate.id().to_string()])
        .status()
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let fresh = serve.register(&spread_number(4), "192.0.2.1").await;
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
