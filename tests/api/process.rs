//! `signal-gate serve` and `check-config` as real processes, configured by the environment.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use signal_gate::emulators::hcaptcha::{HcaptchaEmulator, TEST_SECRET};
use signal_gate::emulators::signal_server::SignalServerEmulator;

use crate::helpers::{base_vars, NUMBER, SITEKEY};

const BINARY: &str = env!("CARGO_BIN_EXE_signal-gate");

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    listener.local_addr().expect("addr").port()
}

#[test]
fn a_missing_or_bad_variable_stops_start_up_and_is_named() {
    let cases = [
        ("SIGNAL_GATE_NUMBER_KEY", None),
        ("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", Some("lots")),
        ("SIGNAL_GATE_TRUSTED_PROXIES", Some("10.0.0.0/33")),
    ];
    for (name, value) in cases {
        let mut command = Command::new(BINARY);
        command.arg("serve").env_clear();
        command
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
            );
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
        let output = command.output().expect("runs");
        assert!(!output.status.success(), "{name} must stop start-up");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{name} not named in: {stderr}");
        assert!(
            !stderr.contains("a-number-key-of"),
            "secret leaked: {stderr}"
        );
    }
}

#[test]
fn check_config_masks_secrets() {
    let output = Command::new(BINARY)
        .arg("check-config")
        .env_clear()
        .env("SIGNAL_GATE_UPSTREAM__URL", "http://127.0.0.1:1")
        .env(
            "SIGNAL_GATE_HCAPTCHA__SECRET",
            "0x1111111111111111111111111111111111111111",
        )
        .env("SIGNAL_GATE_HCAPTCHA__SITEKEY", SITEKEY)
        .env(
            "SIGNAL_GATE_HCAPTCHA__VERIFY_URL",
            "http://127.0.0.1:1/siteverify",
        )
        .env(
            "SIGNAL_GATE_NUMBER_KEY",
            "a-number-key-of-at-least-thirty-two-chars",
        )
        .output()
        .expect("runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("SIGNAL_GATE_LIMITS__REGISTER_PER_IP=10/1h"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SIGNAL_GATE_HCAPTCHA__SECRET=<set>"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("0x1111") && !stdout.contains("a-number-key"),
        "{stdout}"
    );
}

#[tokio::test]
async fn serve_logs_each_decision_without_numbers_tokens_or_codes() {
    let signal = SignalServerEmulator::start().expect("emulator");
    let hcaptcha = HcaptchaEmulator::start(TEST_SECRET, SITEKEY).expect("emulator");
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("state").join("gate.db");
    let port = free_port();
    let mut vars = base_vars(&signal, &hcaptcha, &database.to_string_lossy());
    vars.insert("SIGNAL_GATE_LISTEN".into(), format!("127.0.0.1:{port}"));
    let mut child = Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .envs(&vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until_listening(&http, &url).await;

    let token = hcaptcha.issue_token(SITEKEY, "localhost");
    let answer: Value = http
        .post(format!("{url}/v1/register"))
        .json(&json!({"number": NUMBER, "captcha": token}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let session = answer["sessionId"].as_str().expect("session").to_owned();
    let code = signal.inbox(NUMBER).pop().expect("code delivered");
    let verified: Value = http
        .post(format!("{url}/v1/verify"))
        .json(&json!({"sessionId": session, "number": NUMBER, "code": code}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(verified["verified"], true);

    // SIGTERM drains and exits.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert!(status.success(), "clean exit after SIGTERM");
    let mut logs = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut logs)
        .expect("logs");

    let decisions: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "decision")
        .collect();
    assert_eq!(decisions.len(), 2, "one line per decision: {logs}");
    assert_eq!(decisions[0]["endpoint"], "register");
    assert_eq!(decisions[0]["reason"], "approved");
    assert_eq!(decisions[0]["address_block"], "127.0.0.0/24");
    assert_eq!(decisions[1]["endpoint"], "verify");
    for secret in [NUMBER, "7400123456", &token, &code, &session, TEST_SECRET] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }

    // The database is owner-only and holds no number in plain text.
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&database), 0o600);
    assert_eq!(mode(database.parent().expect("dir")), 0o700);
    let mut bytes = std::fs::read(&database).expect("db");
    bytes.extend(std::fs::read(database.with_extension("db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("7400123456") && !text.contains(&session));
}

async fn wait_until_listening(http: &reqwest::Client, url: &str) {
    for _ in 0..100 {
        if http.get(format!("{url}/")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gate did not start listening");
}

fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gate did not stop in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
