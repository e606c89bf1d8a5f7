//! `signal-gate serve` and `check-config` as real processes, configured by the environment.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use signal_gate::emulators::hcaptcha::TEST_SECRET;

use crate::helpers::{unreachable_serve_vars, ServeProcess, BINARY, NUMBER, SITEKEY};

#[test]
fn a_missing_or_bad_variable_stops_start_up_and_is_named() {
    let cases = [
        ("SIGNAL_GATE_NUMBER_KEY", None),
        ("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", Some("lots")),
        ("SIGNAL_GATE_TRUSTED_PROXIES", Some("10.0.0.0/33")),
        ("SIGNAL_GATE_LOG__REFUSAL_LINES_PER_SECOND", Some("many")),
    ];
    for (name, value) in cases {
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .env_clear()
            .envs(unreachable_serve_vars());
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
        .envs(unreachable_serve_vars())
        .env(
            "SIGNAL_GATE_HCAPTCHA__SECRET",
            "0x1111111111111111111111111111111111111111",
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
    let serve = ServeProcess::prepare();
    let (signal, hcaptcha, url) = (&serve.signal, &serve.hcaptcha, &serve.url);
    let database = &serve.database;
    let mut child = serve.spawn(Stdio::piped).await;
    let http = reqwest::Client::new();

    let token = hcaptcha.issue_token(SITEKEY, "localhost");
    let register = json!({"number": NUMBER, "captcha": token});
    let answer = post_json(&http, &format!("{url}/v1/register"), &register).await;
    let session = answer["sessionId"].as_str().expect("session").to_owned();
    let code = signal.inbox(NUMBER).pop().expect("code delivered");
    let verify = json!({"sessionId": session, "number": NUMBER, "code": code});
    let verified = post_json(&http, &format!("{url}/v1/verify"), &verify).await;
    assert_eq!(verified["verified"], true);

    // SIGTERM drains and exits.
    let (status, logs) = stop_and_read_stdout(&mut child);
    assert!(status.success(), "clean exit after SIGTERM");

    let decisions: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "decision")
        .collect();
    assert_eq!(decisions.len(), 2, "one line per decision: {logs}");
    assert_eq!(decisions[0]["endpoint"], "register");
    assert_eq!(decisions[0]["reason"], "approved");
    assert_eq!(decisions[0]["address_block"], "127.0.0.0/24");
    // The gate's own time leaves out the waits for hCaptcha and signal-server.
    let (elapsed, gate_time) = (&decisions[0]["elapsed_us"], &decisions[0]["gate_us"]);
    assert!(
        gate_time.as_u64().expect("gate_us") < elapsed.as_u64().expect("elapsed_us"),
        "{gate_time} of {elapsed}"
    );
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
    assert_eq!(mode(database), 0o600);
    assert_eq!(mode(database.parent().expect("dir")), 0o700);
    let mut bytes = std::fs::read(database).expect("db");
    bytes.extend(std::fs::read(database.with_extension("db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("7400123456") && !text.contains(&session));
}

/// POSTs `body` and reads the JSON answer.
async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = http.post(url).json(body).send().await.expect("sent");
    response.json().await.expect("json")
}

/// Sends SIGTERM, waits for the exit, and returns it with everything written to stdout.
fn stop_and_read_stdout(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    let status = wait_with_timeout(child, Duration::from_secs(15));
    let mut logs = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut logs)
        .expect("logs");
    (status, logs)
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

/// What a flood of refusals from one address left in a gate's log.
struct FloodLog {
    written: usize,
    not_written: u64,
    seconds: u64,
    logs: String,
}

/// Sends `flood` register requests without a captcha from one address (refused every time:
/// first for the captcha, then by the address budget) and reads the log.
async fn refusal_flood(extra: &[(&str, &str)], flood: usize) -> FloodLog {
    let mut gate = ServeProcess::prepare();
    for (name, value) in extra {
        gate.vars.insert((*name).to_owned(), (*value).to_owned());
    }
    let mut child = gate.spawn(Stdio::piped).await;
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    for _ in 0..flood {
        let response = http
            .post(format!("{}/v1/register", gate.url))
            .json(&json!({"number": NUMBER}))
            .send()
            .await
            .expect("answered");
        assert!(response.status().is_client_error());
    }
    let seconds = started.elapsed().as_secs() + 2;
    // The count of the last second is written within a second or two.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (_, logs) = stop_and_read_stdout(&mut child);
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    let written = lines.iter().filter(|l| l["message"] == "decision").count();
    let not_written = lines
        .iter()
        .filter(|l| l["message"] == "decisions not logged")
        .map(|l| l["count"].as_u64().expect("a count"))
        .sum();
    FloodLog {
        written,
        not_written,
        seconds,
        logs,
    }
}

#[tokio::test]
async fn by_default_every_refusal_of_a_flood_writes_its_line() {
    let flood = 60;
    let log = refusal_flood(&[], flood).await;
    assert_eq!((log.written, log.not_written), (flood, 0), "{}", log.logs);
}

#[tokio::test]
async fn a_refusal_flood_writes_a_bounded_number_of_lines_and_counts_the_rest() {
    let flood = 200;
    let bounded = [("SIGNAL_GATE_LOG__REFUSAL_LINES_PER_SECOND", "10")];
    let FloodLog {
        written,
        not_written,
        seconds,
        logs,
    } = refusal_flood(&bounded, flood).await;
    // Two reasons (captcha_required, then register_per_ip), ten lines a second each.
    let bound = 2 * 10 * seconds as usize;
    assert!(
        written <= bound,
        "{written} lines for {flood} refusals: {logs}"
    );
    assert!(not_written > 0, "nothing was held back: {logs}");
    assert_eq!(written as u64 + not_written, flood as u64, "{logs}");
}
