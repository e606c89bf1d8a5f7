//! Measurements made with an HTTP client rather than wrk: the time an approved request spends
//! in the gate, decisions that touch SQLite under 64 concurrent clients, and start-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use signal_gate::domain::PhoneNumber;
use signal_gate::emulators::hcaptcha::{HcaptchaEmulator, TEST_SECRET, TEST_SITEKEY};

/// The `i`-th of a series of valid UK mobile numbers spread over prefixes and hundred-blocks,
/// so that no abuse rule for sequences or prefixes sees a pattern in them.
pub fn spread_number(i: usize) -> String {
    (0..600)
        .map(|step| 400 + (i * 37 + step) % 600)
        .map(|prefix| format!("+447{prefix:03}{:06}", (i * 7919 + 123_457) % 1_000_000))
        .find(|candidate| {
            PhoneNumber::parse(candidate).is_ok_and(|n| n.kind() == phonenumber::Type::Mobile)
        })
        .expect("a valid UK mobile number")
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The same approved sign-up two ways: `POST /v1/register` through the gate, and directly the
/// four calls the gate makes for it (siteverify, create session, hand over the captcha,
/// request the code). Alternated in blocks; each side's times sorted.
pub async fn approved_latency(
    gate_url: &str,
    signal_url: &str,
    hcaptcha: &HcaptchaEmulator,
    requests: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let http = reqwest::Client::new();
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    let block = 100;
    for start in (0..requests).step_by(block) {
        for i in start..(start + block).min(requests) {
            let body = json!({
                "number": spread_number(2 * i),
                "captcha": hcaptcha.issue_token(TEST_SITEKEY, "localhost"),
                "transport": "sms",
                "client": "bench",
            });
            let started = Instant::now();
            let response = http
                .post(format!("{gate_url}/v1/register"))
                .json(&body)
                .send()
                .await
                .expect("the gate answers");
            let status = response.status();
            let _ = response.bytes().await;
            assert_eq!(status, 200, "an approved register through the gate");
            through.push(started.elapsed());
        }
        for i in start..(start + block).min(requests) {
            let started = Instant::now();
            direct_sign_up(&http, signal_url, hcaptcha, &spread_number(2 * i + 1)).await;
            direct.push(started.elapsed());
        }
    }
    through.sort();
    direct.sort();
    (through, direct)
}

async fn direct_sign_up(
    http: &reqwest::Client,
    signal_url: &str,
    hcaptcha: &HcaptchaEmulator,
    number: &str,
) {
    let token = hcaptcha.issue_token(TEST_SITEKEY, "localhost");
    let form = [
        ("secret", TEST_SECRET),
        ("response", token.as_str()),
        ("remoteip", "127.0.0.1"),
        ("sitekey", TEST_SITEKEY),
    ];
    let verdict: Value = read(http.post(hcaptcha.verify_url()).form(&form)).await;
    assert_eq!(
        verdict["success"], true,
        "siteverify passes an issued token"
    );
    let sessions = format!("{signal_url}/v1/verification/session");
    let session: Value = read(http.post(&sessions).json(&json!({ "number": number }))).await;
    let id = session["id"].as_str().expect("a session id").to_owned();
    let captcha = json!({ "captcha": "signal-hcaptcha.noop.registration.bench" });
    let _: Value = read(http.patch(format!("{sessions}/{id}")).json(&captcha)).await;
    let code = json!({ "transport": "sms", "client": "bench" });
    let _: Value = read(http.post(format!("{sessions}/{id}/code")).json(&code)).await;
}

async fn read(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("the emulator answers");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("a JSON answer")
}

/// What the SQLite run saw.
pub struct StorageRun {
    pub decisions: u64,
    pub elapsed: Duration,
    /// Answers by status and code, for example `429 send_wait`.
    pub outcomes: BTreeMap<String, u64>,
    /// Answers that were a storage error or any 5xx.
    pub storage_errors: u64,
}

/// `clients` concurrent clients, each with its own number and session, for `length`: each
/// alternates a wrong code (the gate counts it per number and per session in SQLite) and a
/// new code request (refused by the number's send schedule, read from SQLite).
pub async fn storage_decisions(
    gate_url: &str,
    hcaptcha: &HcaptchaEmulator,
    clients: usize,
    length: Duration,
) -> StorageRun {
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for i in 0..clients {
        let number = spread_number(100_000 + i);
        let body = register_body(&number, hcaptcha);
        let answer: Value = read(http.post(format!("{gate_url}/v1/register")).json(&body)).await;
        let id = answer["sessionId"].as_str().expect("a session").to_owned();
        sessions.push((number, id));
    }
    let hcaptcha = Arc::new(hcaptcha.clone());
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (number, session) in sessions {
        let (http, url, hcaptcha) = (http.clone(), gate_url.to_owned(), Arc::clone(&hcaptcha));
        tasks.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
            let mut turn = 0u64;
            while Instant::now() < deadline {
                turn += 1;
                let (path, body) = if turn.is_multiple_of(2) {
                    ("/v1/register", register_body(&number, &hcaptcha))
                } else {
                    let code = json!({"sessionId": session, "number": number, "code": "000000"});
                    ("/v1/verify", code)
                };
                let response = http.post(format!("{url}{path}")).json(&body).send().await;
                *outcomes.entry(outcome(response).await).or_default() += 1;
            }
            outcomes
        }));
    }
    let mut outcomes = BTreeMap::new();
    for task in tasks {
        for (key, count) in task.await.expect("a client task") {
            *outcomes.entry(key).or_insert(0) += count;
        }
    }
    let elapsed = started.elapsed();
    let storage_errors = outcomes
        .iter()
        .filter(|(key, _)| key.starts_with('5') || key.contains("storage"))
        .map(|(_, count)| count)
        .sum();
    StorageRun {
        decisions: outcomes.values().sum(),
        elapsed,
        outcomes,
        storage_errors,
    }
}

fn register_body(number: &str, hcaptcha: &HcaptchaEmulator) -> Value {
    json!({
        "number": number,
        "captcha": hcaptcha.issue_token(TEST_SITEKEY, "localhost"),
        "transport": "sms",
        "client": "bench",
    })
}

async fn outcome(response: reqwest::Result<reqwest::Response>) -> String {
    let Ok(response) = response else {
        return "5xx connection error".to_owned();
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match body["code"].as_str() {
        Some(code) => format!("{status} {code}"),
        None => status.to_string(),
    }
}
