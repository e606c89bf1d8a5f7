//! The operator listener: metrics, admin API, and the `admin` command on the database.

use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{error_of, spawn_app, spawn_app_with, NUMBER};

const TOKEN: &str = "an-admin-token-for-tests";

#[tokio::test]
async fn metrics_count_each_decision_by_reason() {
    let app = spawn_app().await;
    assert_eq!(app.register(NUMBER, "192.0.2.1").await.status(), 200);
    let _ = app.register(NUMBER, "192.0.2.2").await;
    let _ = app
        .post("/v1/register", &json!({"number": NUMBER}), "192.0.2.3")
        .await;

    let text = app.metrics().await;
    assert!(text.contains("signal_gate_decisions_total{"), "{text}");
    for expected in [
        r#"{endpoint="register",outcome="approved",reason="approved"} 1"#,
        r#"{endpoint="register",outcome="refused",reason="send_schedule"} 1"#,
        r#"{endpoint="register",outcome="refused",reason="captcha_required"} 1"#,
        "signal_gate_captcha_duration_seconds_count",
        r#"signal_gate_upstream_duration_seconds_count{name="request_code"} 1"#,
        "signal_gate_storage_duration_seconds_count",
        r#"signal_gate_tracked_keys{name="register_per_ip"}"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    assert!(!text.contains("7400123456"), "no number in metrics");
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_is_off_without_one() {
    let off = spawn_app().await;
    let response = off
        .http
        .get(format!("{}/admin/blocks", off.admin_url))
        .send()
        .await
        .expect("up");
    assert_eq!(response.status(), 404);

    let app = spawn_app_with(&[("SIGNAL_GATE_ADMIN__TOKEN", TOKEN)]).await;
    let url = format!("{}/admin/blocks", app.admin_url);
    for bad in [None, Some("Bearer wrong-token"), Some(TOKEN)] {
        let mut request = app.http.get(&url);
        if let Some(value) = bad {
            request = request.header("Authorization", value);
        }
        assert_eq!(request.send().await.expect("up").status(), 401, "{bad:?}");
    }
    let ok = app
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("up");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn an_operator_unblocks_a_locked_number_through_the_api() {
    let app = spawn_app_with(&[("SIGNAL_GATE_ADMIN__TOKEN", TOKEN)]).await;
    assert_eq!(app.register(NUMBER, "192.0.2.1").await.status(), 200);
    assert_eq!(
        error_of(app.register(NUMBER, "192.0.2.2").await).await.0,
        429
    );

    let state: Value = app
        .http
        .get(format!("{}/admin/numbers/{NUMBER}", app.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("up")
        .json()
        .await
        .expect("json");
    assert_eq!(
        state["sendsInWindow"]
            .as_u64()
            .or(state["sends_in_window"].as_u64()),
        Some(1)
    );
    assert!(
        !state.to_string().contains("7400123456"),
        "the answer names the number by hash"
    );

    let cleared = app
        .http
        .post(format!("{}/admin/numbers/{NUMBER}/clear", app.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("up");
    assert_eq!(cleared.status(), 200);
    assert_eq!(
        app.register(NUMBER, "192.0.2.3").await.status(),
        200,
        "registers again"
    );
}

#[tokio::test]
async fn blocks_added_through_the_api_refuse_at_once_and_can_be_removed() {
    let app = spawn_app_with(&[("SIGNAL_GATE_ADMIN__TOKEN", TOKEN)]).await;
    let added = app
        .http
        .post(format!("{}/admin/blocks", app.admin_url))
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "prefix", "key": "+447400", "duration": "1h", "reason": "test"}))
        .send()
        .await
        .expect("up");
    assert_eq!(added.status(), 201);
    let refused = app.register(NUMBER, "192.0.2.1").await;
    assert_eq!(error_of(refused).await.1, "number_not_allowed");

    let removed = app
        .http
        .delete(format!("{}/admin/blocks/prefix/%2B447400", app.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("up");
    assert_eq!(removed.status(), 200);
    assert_eq!(app.register(NUMBER, "192.0.2.2").await.status(), 200);

    let bad = app
        .http
        .post(format!("{}/admin/blocks", app.admin_url))
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "planet", "key": "earth", "duration": "1h"}))
        .send()
        .await
        .expect("up");
    assert_eq!(bad.status(), 400);
    let unknown_field = app
        .http
        .post(format!("{}/admin/blocks", app.admin_url))
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "number", "key": "+447400123456", "duration": "1h", "x": 1}))
        .send()
        .await
        .expect("up");
    let (status, code, _) = error_of(unknown_field).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_request"),
        "a JSON error"
    );
}

#[tokio::test]
async fn the_admin_command_clears_a_number_while_the_gate_runs() {
    let app = spawn_app().await;
    assert_eq!(app.register(NUMBER, "192.0.2.1").await.status(), 200);
    assert_eq!(
        error_of(app.register(NUMBER, "192.0.2.2").await).await.0,
        429
    );

    let output = Command::new(env!("CARGO_BIN_EXE_signal-gate"))
        .args(["admin", "clear", NUMBER])
        .env_clear()
        .envs(&app.vars)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(answer["cleared"], true);
    assert_eq!(
        app.register(NUMBER, "192.0.2.3").await.status(),
        200,
        "registers again"
    );

    let blocked = Command::new(env!("CARGO_BIN_EXE_signal-gate"))
        .args(["admin", "block", "country", "44", "--for", "1h"])
        .env_clear()
        .envs(&app.vars)
        .output()
        .expect("runs");
    assert!(blocked.status.success());
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let refused = app
        .register(&crate::helpers::spread_number(5), "192.0.2.4")
        .await;
    assert_eq!(
        error_of(refused).await.1,
        "number_not_allowed",
        "the gate reloaded the block"
    );
}

#[tokio::test]
async fn readiness_names_what_is_wrong() {
    let url = crate::helpers::unreachable_url();
    let app = spawn_app_with(&[("SIGNAL_GATE_UPSTREAM__URL", &url)]).await;
    let response = app
        .http
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .expect("up");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["reason"], "signal-server unreachable");
}
