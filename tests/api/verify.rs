//! `POST /v1/verify`: sessions belong to their number, and wrong codes are budgeted per session
//! and per number across every session and code.

use serde_json::{json, Value};
use signal_gate::emulators::FaultMode;

use crate::helpers::{error_of, spawn_app, NUMBER};

/// A code that is not the one in the inbox.
fn wrong(code: &str) -> String {
    let first = if code.starts_with('9') { "0" } else { "9" };
    format!("{first}{}", &code[1..])
}

#[tokio::test]
async fn the_right_code_verifies_and_a_wrong_one_does_not() {
    let app = spawn_app().await;
    let session = app.session_for(NUMBER, "192.0.2.1").await;
    let code = app.last_code(NUMBER);

    let response = app
        .verify(&session, NUMBER, &wrong(&code), "192.0.2.1")
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["verified"], false);

    let response = app
        .verify(&session, "+44 7400 123 456", &code, "192.0.2.1")
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["verified"], true);
    assert_eq!(body["sessionId"], session.as_str());
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{body}");
}

#[tokio::test]
async fn a_session_only_answers_for_its_own_number() {
    let app = spawn_app().await;
    let session = app.session_for(NUMBER, "192.0.2.1").await;
    let code = app.last_code(NUMBER);
    let cases = [
        (session.as_str(), "+447400123457", "another number"),
        (
            "AAAAAAAAAAAAAAAAAAAAAA==",
            NUMBER,
            "an id the gate never issued",
        ),
    ];
    for (id, number, why) in cases {
        let response = app.verify(id, number, &code, "192.0.2.1").await;
        assert_eq!(
            error_of(response).await,
            (404, "session_not_found".into(), None),
            "{why}"
        );
    }
    assert_eq!(app.signal.calls()[3], 0, "no code reached signal-server");
}

#[tokio::test]
async fn malformed_verify_requests_are_refused() {
    let app = spawn_app().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"number": NUMBER, "code": "123456"}),
            400,
            "invalid_request",
        ),
        (
            json!({"sessionId": "abc", "code": "123456"}),
            400,
            "invalid_request",
        ),
        (
            json!({"sessionId": "abc", "number": NUMBER}),
            400,
            "invalid_request",
        ),
        (
            json!({"sessionId": "a/b", "number": NUMBER, "code": "123456"}),
            400,
            "invalid_request",
        ),
        (
            json!({"sessionId": "abc", "number": NUMBER, "code": "12a456"}),
            400,
            "invalid_request",
        ),
        (
            json!({"sessionId": "abc", "number": NUMBER, "code": ""}),
            400,
            "invalid_request",
        ),
        (
            json!({"sessionId": "abc", "number": "12", "code": "123456"}),
            422,
            "invalid_number",
        ),
        (
            json!({"sessionId": 5, "number": NUMBER, "code": "123456"}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let response = app.post("/v1/verify", &body, "192.0.2.1").await;
        assert_eq!(
            error_of(response).await,
            (status, code.to_owned(), None),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_session_has_three_wrong_codes_then_needs_a_new_one() {
    let app = spawn_app().await;
    let session = app.session_for(NUMBER, "192.0.2.1").await;
    let bad = wrong(&app.last_code(NUMBER));
    for _ in 0..3 {
        assert_eq!(
            app.verify(&session, NUMBER, &bad, "192.0.2.1")
                .await
                .status(),
            200
        );
    }
    let (status, code, _) = error_of(app.verify(&session, NUMBER, &bad, "192.0.2.1").await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert_eq!(
        app.signal.calls()[3],
        3,
        "the fourth guess never reached signal-server"
    );
}

#[tokio::test]
async fn wrong_codes_count_per_number_across_sessions_and_restarts() {
    let app = spawn_app().await;
    let first = app.session_for(NUMBER, "192.0.2.1").await;
    let bad = wrong(&app.last_code(NUMBER));
    for _ in 0..3 {
        assert_eq!(
            app.verify(&first, NUMBER, &bad, "192.0.2.1").await.status(),
            200
        );
    }
    app.clock.advance(std::time::Duration::from_secs(61));
    let second = app.session_for(NUMBER, "192.0.2.2").await;
    for _ in 0..2 {
        assert_eq!(
            app.verify(&second, NUMBER, &bad, "192.0.2.2")
                .await
                .status(),
            200
        );
    }
    // A restart, a new session and a new code: the number's budget is still spent.
    let app = app.restart().await;
    app.clock.advance(std::time::Duration::from_secs(121));
    let third = app.session_for(NUMBER, "192.0.2.3").await;
    let right = app.last_code(NUMBER);
    let (status, _, retry) = error_of(app.verify(&third, NUMBER, &right, "192.0.2.3").await).await;
    assert_eq!(status, 429);
    assert!(
        retry.is_some_and(|r| r > 3000 && r <= 3600),
        "locked for the hour: {retry:?}"
    );
}

#[tokio::test]
async fn parallel_guesses_spend_exactly_the_budget() {
    let app = spawn_app_with_session_budget("50").await;
    let session = app.session_for(NUMBER, "192.0.2.1").await;
    let bad = wrong(&app.last_code(NUMBER));
    let guesses = (0..50).map(|_| {
        let (app, session, bad) = (&app, &session, &bad);
        async move {
            app.verify(session, NUMBER, bad, "192.0.2.1")
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(checked, 5, "wrong_codes_per_number is 5/1h: {statuses:?}");
    assert_eq!(
        app.signal.calls()[3],
        5,
        "exactly five guesses reached signal-server"
    );
}

async fn spawn_app_with_session_budget(per_session: &str) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(&[("SIGNAL_GATE_LIMITS__WRONG_CODES_PER_SESSION", per_session)])
        .await
}

#[tokio::test]
async fn a_guess_that_was_never_checked_is_given_back() {
    let app = spawn_app().await;
    let session = app.session_for(NUMBER, "192.0.2.1").await;
    let code = app.last_code(NUMBER);
    app.signal.set_mode(FaultMode::Fail { status: 500 });
    for _ in 0..5 {
        let response = app
            .verify(&session, NUMBER, &wrong(&code), "192.0.2.1")
            .await;
        assert_eq!(
            error_of(response).await,
            (502, "upstream_unavailable".into(), None)
        );
    }
    app.signal.set_mode(FaultMode::Normal);
    let response = app.verify(&session, NUMBER, &code, "192.0.2.1").await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["verified"], true);
}

#[tokio::test]
async fn verify_requests_per_address_are_limited() {
    let app = spawn_app_with_verify_budget().await;
    for _ in 0..3 {
        let response = app.verify("AAAA", NUMBER, "123456", "198.51.100.3").await;
        assert_eq!(response.status(), 404);
    }
    let (status, code, _) =
        error_of(app.verify("AAAA", NUMBER, "123456", "198.51.100.3").await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
}

async fn spawn_app_with_verify_budget() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(&[("SIGNAL_GATE_LIMITS__VERIFY_PER_IP", "3/1h")]).await
}
