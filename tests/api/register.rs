//! `POST /v1/register`: the happy path, every refusal, and the upstream contract.

use std::time::Duration;

use serde_json::{json, Value};
use signal_gate::emulators::FaultMode;

use crate::helpers::{
    error_of, spawn_app, spawn_app_with, spread_number, stored_rows, NUMBER, SITEKEY,
};

#[tokio::test]
async fn a_legitimate_user_gets_one_code_for_the_canonical_number() {
    let app = spawn_app().await;

    let response = app.register("+44 7400 123456", "198.51.100.7").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let fields: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), 5, "{body}");
    for field in [
        "sessionId",
        "nextSms",
        "nextCall",
        "nextVerificationAttempt",
        "verified",
    ] {
        assert!(body.get(field).is_some(), "{field} missing in {body}");
    }
    assert_eq!(body["verified"], false);
    assert_eq!(
        app.signal.inbox(NUMBER).len(),
        1,
        "one code, to the canonical E.164"
    );
    // The client address, alone, is what signal-server sees as X-Forwarded-For.
    assert_eq!(
        app.signal.forwarded_for().last().map(String::as_str),
        Some("198.51.100.7")
    );
    assert_eq!(
        app.hcaptcha.last_remoteip().as_deref(),
        Some("198.51.100.7")
    );
}

#[tokio::test]
async fn other_writings_of_a_number_share_its_send_schedule() {
    let app = spawn_app().await;
    assert_eq!(app.register(NUMBER, "198.51.100.1").await.status(), 200);

    for (i, writing) in ["0044 7400 123456", "+44 (7400) 123-456", "＋447400123456"]
        .iter()
        .enumerate()
    {
        let response = app
            .register(writing, &format!("198.51.100.{}", i + 2))
            .await;
        let (status, code, retry) = error_of(response).await;
        assert_eq!((status, code.as_str()), (429, "rate_limited"), "{writing}");
        assert!(
            retry.is_some_and(|r| (1..=60).contains(&r)),
            "{writing}: {retry:?}"
        );
    }
    assert_eq!(app.signal.sms_sent(), 1);
}

#[tokio::test]
async fn malformed_requests_are_refused_before_any_outside_call() {
    let app = spawn_app().await;
    let token = app.token();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"captcha": token}),
            400,
            "invalid_request",
            "no number",
        ),
        (
            json!({"number": 447400123456u64, "captcha": token}),
            400,
            "invalid_request",
            "number as a JSON number",
        ),
        (
            json!({"number": NUMBER}),
            400,
            "captcha_required",
            "no captcha",
        ),
        (
            json!({"number": NUMBER, "captcha": ""}),
            400,
            "captcha_required",
            "empty captcha",
        ),
        (
            json!({"number": NUMBER, "captcha": "  "}),
            400,
            "captcha_required",
            "blank captcha",
        ),
        (
            json!({"number": NUMBER, "captcha": null}),
            400,
            "captcha_required",
            "null captcha",
        ),
        (
            json!({"number": NUMBER, "captcha": "has spaces in it"}),
            403,
            "captcha_invalid",
            "malformed captcha",
        ),
        (
            json!({"number": "07400 123456", "captcha": token}),
            422,
            "invalid_number",
            "national form",
        ),
        (
            json!({"number": "+1 555 0100", "captcha": token}),
            422,
            "invalid_number",
            "too short",
        ),
        (
            json!({"number": "+44 7400 12345a", "captcha": token}),
            422,
            "invalid_number",
            "a letter",
        ),
        (
            json!({"number": NUMBER, "captcha": token, "transport": "pigeon"}),
            400,
            "invalid_request",
            "unknown transport",
        ),
        (
            json!({"number": NUMBER, "captcha": token, "extra": 1}),
            400,
            "invalid_request",
            "unknown field",
        ),
        (
            json!({"number": NUMBER, "captcha": token, "client": ""}),
            400,
            "invalid_request",
            "empty client",
        ),
        (json!([NUMBER]), 400, "invalid_request", "an array"),
    ];
    for (i, (body, status, code, why)) in cases.into_iter().enumerate() {
        let response = app
            .post("/v1/register", &body, &format!("198.51.100.{i}"))
            .await;
        assert_eq!(
            error_of(response).await,
            (status, code.to_owned(), None),
            "{why}"
        );
    }
    assert_eq!(
        app.hcaptcha.calls(),
        0,
        "no siteverify call for a malformed request"
    );
    assert_eq!(app.signal.calls(), [0; 4], "nothing reached signal-server");
}

#[tokio::test]
async fn bodies_that_are_not_small_json_are_refused_with_their_codes() {
    let app = spawn_app().await;
    let url = format!("{}/v1/register", app.url);
    let post = |body: Vec<u8>, content_type: Option<&str>| {
        let mut request = app
            .http
            .post(&url)
            .header("X-Forwarded-For", "192.0.2.1")
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        request.send()
    };
    let cases: Vec<(Vec<u8>, Option<&str>, u16, &str)> = vec![
        (
            vec![b' '; 5000],
            Some("application/json"),
            413,
            "payload_too_large",
        ),
        (
            b"{}".to_vec(),
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        (b"{}".to_vec(), None, 415, "unsupported_media_type"),
        (
            b"".to_vec(),
            Some("application/json"),
            400,
            "invalid_request",
        ),
        (
            b"{\"number\":".to_vec(),
            Some("application/json"),
            400,
            "invalid_request",
        ),
        (
            b"{\"number\":\"\xff\xfe\"}".to_vec(),
            Some("application/json"),
            400,
            "invalid_request",
        ),
        (
            [b"[".repeat(1000), b"]".repeat(1000)].concat(),
            Some("application/json"),
            400,
            "invalid_request",
        ),
        (
            br#"{"number":"+447400123456","number":"+447400123457","captcha":"x"}"#.to_vec(),
            Some("application/json; charset=utf-8"),
            400,
            "invalid_request",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = post(body, content_type).await.expect("answered");
        assert_eq!(
            error_of(response).await,
            (status, code.to_owned(), None),
            "{code} {content_type:?}"
        );
    }
}

#[tokio::test]
async fn every_bad_captcha_is_refused_and_never_reaches_upstream() {
    let app = spawn_app_with(&[("SIGNAL_GATE_HCAPTCHA__HOSTNAMES", "localhost")]).await;
    let used = app.token();
    assert_eq!(
        app.post(
            "/v1/register",
            &json!({"number": "+447400123401", "captcha": used}),
            "192.0.2.200"
        )
        .await
        .status(),
        200
    );
    let foreign_key = format!(
        "signal-hcaptcha.20000000-ffff-ffff-ffff-000000000002.registration.{}",
        app.token()
    );
    let cases = [
        ("unknown token", "E1_never-issued".to_owned()),
        ("replayed token", used.clone()),
        ("foreign site key", foreign_key),
        (
            "expired token",
            app.hcaptcha
                .issue_token_aged(SITEKEY, "localhost", Duration::from_secs(600)),
        ),
        (
            "other hostname",
            app.hcaptcha.issue_token(SITEKEY, "evil.example"),
        ),
        (
            "test token for a real key",
            "20000000-aaaa-bbbb-cccc-000000000002".to_owned(),
        ),
    ];
    let calls_before = app.signal.calls();
    for (i, (why, captcha)) in cases.into_iter().enumerate() {
        let number = format!("+4474001234{:02}", 10 + i);
        let response = app
            .post(
                "/v1/register",
                &json!({"number": number, "captcha": captcha}),
                &format!("192.0.2.{i}"),
            )
            .await;
        assert_eq!(
            error_of(response).await,
            (403, "captcha_invalid".into(), None),
            "{why}"
        );
    }
    assert_eq!(
        app.signal.calls(),
        calls_before,
        "no refused captcha reached signal-server"
    );
}

#[tokio::test]
async fn signal_captcha_forms_with_the_right_site_key_pass() {
    let app = spawn_app().await;
    let forms = [
        format!("signal-hcaptcha.{SITEKEY}.registration.{}", app.token()),
        format!(
            "signalcaptcha://signal-hcaptcha.{SITEKEY}.registration.{}",
            app.token()
        ),
    ];
    for (i, captcha) in forms.into_iter().enumerate() {
        let number = format!("+4474001235{i:02}");
        let response = app
            .post(
                "/v1/register",
                &json!({"number": number, "captcha": captcha}),
                &format!("192.0.2.{i}"),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn captcha_outages_fail_closed() {
    let app = spawn_app().await;
    // A proxy's 502 or 429 that carries a success body once let the request through.
    let faults = [
        FaultMode::Fail { status: 500 },
        FaultMode::Garbage,
        FaultMode::Slow { millis: 1500 },
        FaultMode::Oversized,
        FaultMode::NormalBodyWithStatus { status: 502 },
        FaultMode::NormalBodyWithStatus { status: 429 },
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        app.hcaptcha.set_mode(fault.clone());
        let response = app
            .register(&format!("+4474001236{i:02}"), &format!("192.0.2.{i}"))
            .await;
        assert_eq!(
            error_of(response).await,
            (503, "captcha_unavailable".into(), None),
            "{fault:?}"
        );
    }
    assert_eq!(app.signal.calls(), [0; 4]);
}

#[tokio::test]
async fn captcha_outages_pass_when_the_operator_chose_to_fail_open() {
    let app = spawn_app_with(&[("SIGNAL_GATE_HCAPTCHA__ON_ERROR", "open")]).await;
    app.hcaptcha.set_mode(FaultMode::Fail { status: 503 });
    assert_eq!(app.register(NUMBER, "192.0.2.1").await.status(), 200);
    // The number's own budget still applies while failing open.
    let (status, ..) = error_of(app.register(NUMBER, "192.0.2.2").await).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn an_address_gets_its_budget_and_then_a_wait() {
    let app = spawn_app().await;
    for i in 0..10 {
        let response = app.register(&spread_number(i), "203.0.113.5").await;
        assert_eq!(response.status(), 200, "request {i}");
    }
    let (status, code, retry) =
        error_of(app.register(&spread_number(90), "203.0.113.5").await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert_eq!(
        retry,
        Some(360),
        "10/1h gives one request back every six minutes"
    );
    // Another address of the same IPv6 /64 shares the budget; another /64 does not.
    for i in 0..10 {
        let ip = format!("2001:db8:0:1::{i:x}");
        assert_eq!(
            app.register(&spread_number(20 + i), &ip).await.status(),
            200
        );
    }
    let (status, ..) = error_of(
        app.register(&spread_number(91), "2001:db8:0:1:ffff::1")
            .await,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        app.register(&spread_number(92), "2001:db8:0:2::1")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(&[("SIGNAL_GATE_TRUSTED_PROXIES", "")]).await;
    for i in 0..10 {
        let ip = format!("198.51.100.{i}");
        assert_eq!(app.register(&spread_number(i), &ip).await.status(), 200);
    }
    // Ten different forged addresses later, the loopback peer's budget is spent.
    let (status, ..) = error_of(app.register(&spread_number(93), "198.51.100.99").await).await;
    assert_eq!(status, 429);
    assert_eq!(
        app.signal.forwarded_for().last().map(String::as_str),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn the_send_schedule_escalates_and_locks_for_the_day() {
    let app = spawn_app().await;
    let waits = [60, 120, 300, 600];
    for (i, wait) in waits.iter().enumerate() {
        assert_eq!(
            app.register(NUMBER, &format!("192.0.2.{i}")).await.status(),
            200,
            "send {i}"
        );
        let (status, _, retry) = error_of(app.register(NUMBER, "192.0.2.100").await).await;
        assert_eq!(
            (status, retry),
            (429, Some(*wait)),
            "wait after send {}",
            i + 1
        );
        app.clock.advance(Duration::from_secs(*wait));
    }
    assert_eq!(
        app.register(NUMBER, "192.0.2.50").await.status(),
        200,
        "fifth send"
    );
    let (status, _, retry) = error_of(app.register(NUMBER, "192.0.2.51").await).await;
    assert_eq!(status, 429);
    let elapsed: u64 = waits.iter().sum();
    assert_eq!(
        retry,
        Some(86_400 - elapsed),
        "locked until the day is over"
    );
    assert_eq!(app.signal.inbox(NUMBER).len(), 5);
}

#[tokio::test]
async fn the_send_schedule_survives_a_restart() {
    let app = spawn_app().await;
    assert_eq!(app.register(NUMBER, "192.0.2.1").await.status(), 200);

    let restarted = app.restart().await;

    let (status, _, retry) = error_of(restarted.register(NUMBER, "192.0.2.2").await).await;
    assert_eq!((status, retry), (429, Some(60)));
}

#[tokio::test]
async fn upstream_failures_map_to_stable_codes_and_charge_no_one() {
    let app = spawn_app().await;
    let cases = [
        (
            FaultMode::Fail { status: 500 },
            502,
            "upstream_unavailable",
            None,
        ),
        (
            FaultMode::Fail { status: 503 },
            502,
            "upstream_unavailable",
            None,
        ),
        (FaultMode::Garbage, 502, "upstream_unavailable", None),
        (FaultMode::Oversized, 502, "upstream_unavailable", None),
        (
            FaultMode::Slow { millis: 2500 },
            504,
            "upstream_timeout",
            None,
        ),
        (
            FaultMode::RateLimited {
                retry_after: Some(42),
            },
            429,
            "rate_limited",
            Some(42),
        ),
        (
            FaultMode::RateLimited { retry_after: None },
            429,
            "rate_limited",
            Some(60),
        ),
        (
            FaultMode::Fail { status: 440 },
            440,
            "upstream_rejected",
            None,
        ),
    ];
    for (i, (fault, status, code, retry)) in cases.into_iter().enumerate() {
        app.signal.set_mode(fault.clone());
        let response = app.register(NUMBER, &format!("192.0.2.{i}")).await;
        assert_eq!(
            error_of(response).await,
            (status, code.to_owned(), retry),
            "{fault:?}"
        );
    }
    app.signal.set_mode(FaultMode::Normal);
    assert_eq!(
        app.register(NUMBER, "192.0.2.99").await.status(),
        200,
        "no failure charged"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_bad_gateway() {
    let url = crate::helpers::unreachable_url();
    let app = spawn_app_with(&[("SIGNAL_GATE_UPSTREAM__URL", &url)]).await;
    let response = app.register(NUMBER, "192.0.2.1").await;
    assert_eq!(
        error_of(response).await,
        (502, "upstream_unavailable".into(), None)
    );
}

#[tokio::test]
async fn upstream_refusals_keep_their_status() {
    let app = spawn_app().await;
    let body = json!({"number": NUMBER, "captcha": app.token(), "transport": "voice"});
    let response = app.post("/v1/register", &body, "192.0.2.1").await;
    assert_eq!(
        error_of(response).await,
        (418, "upstream_rejected".into(), None)
    );
    // No code went out, so the number may ask again at once, by SMS.
    assert_eq!(app.register(NUMBER, "192.0.2.2").await.status(), 200);
}

#[tokio::test]
async fn a_send_is_noted_for_pumping_unless_the_code_certainly_did_not_go_out() {
    // The note is written while signal-server is asked for the code, and taken back when it
    // refuses; a code request that timed out may have sent the code, so its note stays.
    let app = spawn_app_with(&[("SIGNAL_GATE_UPSTREAM__TIMEOUT", "1s")]).await;
    assert_eq!(
        app.register(&spread_number(1), "192.0.2.1").await.status(),
        200
    );
    assert_eq!(stored_rows(&app.database, "sends").await, 1);

    let body = json!({"number": spread_number(2), "captcha": app.token(), "transport": "voice"});
    let refused = app.post("/v1/register", &body, "192.0.2.2").await;
    assert_eq!(refused.status(), 418);
    assert_eq!(
        stored_rows(&app.database, "sends").await,
        1,
        "refused: no note"
    );
    assert_eq!(
        stored_rows(&app.database, "sessions").await,
        2,
        "the session is stored"
    );

    app.signal.set_mode(FaultMode::SlowCodes { millis: 1500 });
    let timed_out = app.register(&spread_number(3), "192.0.2.3").await;
    assert_eq!(timed_out.status(), 504);
    assert_eq!(
        stored_rows(&app.database, "sends").await,
        2,
        "timed out: noted"
    );
}

#[tokio::test]
async fn parallel_requests_for_one_number_send_exactly_one_code() {
    let app = spawn_app().await;
    let requests = (0..50).map(|i| {
        let app = &app;
        async move {
            app.register(NUMBER, &format!("10.1.{}.{}", i / 200, i % 200))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let passed = statuses.iter().filter(|s| s.as_u16() == 200).count();
    let limited = statuses.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!((passed, limited), (1, 49));
    assert_eq!(app.signal.inbox(NUMBER).len(), 1);
}

#[tokio::test]
async fn parallel_requests_from_one_address_spend_exactly_its_budget() {
    let app = spawn_app().await;
    let requests = (0..50).map(|i| {
        let app = &app;
        async move {
            app.register(&spread_number(i), "203.0.113.77")
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let passed = statuses.iter().filter(|s| s.as_u16() == 200).count();
    assert_eq!(passed, 10);
    assert_eq!(app.signal.sms_sent(), 10);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/v1/register", app.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn the_operator_listener_reports_health_and_readiness() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app
            .http
            .get(format!("{}{path}", app.admin_url))
            .send()
            .await
            .expect("up");
        assert_eq!(response.status(), 200, "{path}");
    }
    let on_client_port = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("up");
    assert_eq!(
        on_client_port.status(),
        404,
        "operator endpoints stay off the client port"
    );
}
