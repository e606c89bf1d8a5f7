//! Adversarial tests of the abuse defenses over real HTTP: forged addresses, address blocks,
//! destinations, sequential numbers, SMS pumping, captcha scores, parallel bursts, enumeration
//! and shadow mode.

use std::time::Duration;

use serde_json::{json, Value};
use signal_gate::emulators::hcaptcha::{TEST_SITEKEY_BOT, TEST_TOKEN_BOT};

use crate::helpers::{error_of, spawn_app, spawn_app_with, spread_number, TestApp};

/// Registers with a custom header set and returns the status.
async fn register_with_headers(app: &TestApp, number: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = app
        .http
        .post(format!("{}/v1/register", app.url))
        .json(&json!({"number": number, "captcha": app.token()}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("answered").status().as_u16()
}

#[tokio::test]
async fn forged_forwarding_headers_never_buy_a_fresh_budget() {
    let app = spawn_app_with(&[("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", "2/1h")]).await;
    let forgeries: [&[(&str, &str)]; 6] = [
        &[("X-Forwarded-For", "1.1.1.1, 203.0.113.9")],
        &[
            ("X-Forwarded-For", "8.8.8.8"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        &[("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "9.9.9.9")],
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=7.7.7.7"),
        ],
        &[("X-Forwarded-For", "203.0.113.9, 127.0.0.1")],
        &[("X-Forwarded-For", "6.6.6.6, 5.5.5.5, 203.0.113.9")],
    ];
    let mut passed = 0;
    for (i, headers) in forgeries.iter().enumerate() {
        passed += u16::from(register_with_headers(&app, &spread_number(i), headers).await == 200);
    }
    assert_eq!(
        passed, 2,
        "every forgery is 203.0.113.9, which has a budget of two"
    );
    let forwarded: Vec<String> = app.signal.forwarded_for();
    assert!(
        forwarded.iter().all(|f| f == "203.0.113.9"),
        "{forwarded:?}"
    );
}

#[tokio::test]
async fn garbage_in_forwarded_for_falls_back_to_the_proxy() {
    let app = spawn_app_with(&[("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", "1/1h")]).await;
    let junk = [
        "not-an-ip",
        "203.0.113.1, ???",
        "[::1",
        "1.2.3.4:99999",
        "%%%",
    ];
    let mut passed = 0;
    for (i, value) in junk.iter().enumerate() {
        let headers = [("X-Forwarded-For", *value)];
        passed += u16::from(register_with_headers(&app, &spread_number(i), &headers).await == 200);
    }
    assert_eq!(passed, 1, "all garbage shares the loopback proxy's budget");
}

#[tokio::test]
async fn an_address_block_has_its_own_budget_for_v4_and_v6() {
    let app = spawn_app_with(&[("SIGNAL_GATE_LIMITS__REGISTER_PER_BLOCK", "3/1h")]).await;
    for (family, ips) in [
        (
            "IPv4 /24",
            [
                "198.51.100.1",
                "198.51.100.2",
                "198.51.100.3",
                "198.51.100.4",
            ],
        ),
        (
            "IPv6 /48",
            [
                "2001:db8:5:1::1",
                "2001:db8:5:2::1",
                "2001:db8:5:3::1",
                "2001:db8:5:4::1",
            ],
        ),
    ] {
        let offset = if family.starts_with("IPv4") { 0 } else { 10 };
        for (i, ip) in ips.iter().enumerate().take(3) {
            let response = app.register(&spread_number(offset + i), ip).await;
            assert_eq!(response.status(), 200, "{family} {ip}");
        }
        let (status, code, _) =
            error_of(app.register(&spread_number(offset + 3), ips[3]).await).await;
        assert_eq!((status, code.as_str()), (429, "rate_limited"), "{family}");
    }
    // Rotating through addresses of one /64 is one address.
    let rotated = app.register(&spread_number(30), "2001:db8:6:1::99").await;
    assert_eq!(rotated.status(), 200);
}

#[tokio::test]
async fn premium_and_off_list_destinations_are_refused_before_the_captcha() {
    let app = spawn_app_with(&[("SIGNAL_GATE_POLICY__DENY_COUNTRIES", "+49,FR")]).await;
    let refused = [
        ("+44 909 879 0000", "premium rate"),
        ("+44 871 234 5678", "shared cost"),
        ("+49 151 23456789", "denied calling code"),
        ("+33 6 12 34 56 78", "denied region"),
    ];
    for (i, (number, why)) in refused.iter().enumerate() {
        let response = app.register(number, &format!("192.0.2.{i}")).await;
        assert_eq!(
            error_of(response).await,
            (403, "number_not_allowed".into(), None),
            "{why}"
        );
    }
    assert_eq!(
        app.hcaptcha.calls(),
        0,
        "refused before any siteverify call"
    );
    assert_eq!(app.signal.calls(), [0; 4]);

    let allow_only = spawn_app_with(&[("SIGNAL_GATE_POLICY__ALLOW_COUNTRIES", "GB")]).await;
    assert_eq!(
        allow_only
            .register("+447400123456", "192.0.2.1")
            .await
            .status(),
        200
    );
    let response = allow_only.register("+12015550123", "192.0.2.2").await;
    assert_eq!(error_of(response).await.1, "number_not_allowed");
}

#[tokio::test]
async fn prefix_and_country_budgets_hold_under_parallel_bursts() {
    for (variable, allowed) in [
        ("SIGNAL_GATE_LIMITS__REGISTER_PER_PREFIX", 7usize),
        ("SIGNAL_GATE_LIMITS__REGISTER_PER_COUNTRY", 12usize),
    ] {
        let rate = format!("{allowed}/1h");
        let app = spawn_app_with(&[(variable, &rate)]).await;
        // Fifty numbers of one prefix, each in its own hundred, each from its own address.
        let requests = (0..50).map(|i| {
            let app = &app;
            let number = format!("+44740{:07}", i * 10_007 + 1_000_000);
            async move {
                app.register(&number, &format!("10.{i}.0.1"))
                    .await
                    .status()
                    .as_u16()
            }
        });
        let statuses = futures_util::future::join_all(requests).await;
        let passed = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(passed, allowed, "{variable}: {statuses:?}");
        assert_eq!(app.signal.sms_sent(), allowed);
    }
}

#[tokio::test]
async fn parallel_bursts_from_one_block_spend_exactly_its_budget() {
    let app = spawn_app_with(&[("SIGNAL_GATE_LIMITS__REGISTER_PER_BLOCK", "9/1h")]).await;
    let requests = (0..50).map(|i| {
        let app = &app;
        async move {
            app.register(&spread_number(i), &format!("198.51.100.{}", i + 1))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert_eq!(statuses.iter().filter(|s| s.as_u16() == 200).count(), 9);
}

#[tokio::test]
async fn sequential_numbers_block_their_hundred_and_the_block_survives_a_restart() {
    let app = spawn_app().await;
    for (i, last) in ["10", "11", "12"].iter().enumerate() {
        let response = app
            .register(&format!("+4474009988{last}"), &format!("10.0.{i}.1"))
            .await;
        assert_eq!(response.status(), 200, "number {last}");
    }
    let fourth = app.register("+447400998813", "10.0.9.1").await;
    assert_eq!(
        error_of(fourth).await,
        (403, "number_not_allowed".into(), None)
    );
    let neighbour = app.register("+447400998850", "10.0.10.1").await;
    assert_eq!(
        error_of(neighbour).await.1,
        "number_not_allowed",
        "the whole hundred is blocked"
    );
    assert_eq!(
        app.register("+447400998950", "10.0.11.1").await.status(),
        200,
        "next hundred"
    );

    let restarted = app.restart().await;
    let again = restarted.register("+447400998877", "10.0.12.1").await;
    assert_eq!(error_of(again).await.1, "number_not_allowed");
}

#[tokio::test]
async fn codes_that_are_never_verified_block_their_prefix() {
    let app = spawn_app_with(&[("SIGNAL_GATE_LIMITS__REGISTER_PER_PREFIX", "100/1h")]).await;
    // A pumping run: ten codes to one prefix, none ever verified.
    for i in 0..10 {
        let number = format!("+44745{:07}", i * 100_003 + 1_000_000);
        assert_eq!(
            app.register(&number, &format!("10.1.{i}.1")).await.status(),
            200
        );
    }
    app.clock.advance(Duration::from_secs(6 * 60));
    let next = app.register("+447451999901", "10.1.99.1").await;
    assert_eq!(
        error_of(next).await,
        (403, "number_not_allowed".into(), None)
    );
    // Other prefixes are untouched.
    assert_eq!(
        app.register("+447400123456", "10.1.100.1").await.status(),
        200
    );
}

#[tokio::test]
async fn codes_that_are_verified_never_look_like_pumping() {
    let app = spawn_app_with(&[("SIGNAL_GATE_LIMITS__REGISTER_PER_PREFIX", "100/1h")]).await;
    for i in 0..12 {
        let number = format!("+44745{:07}", i * 100_003 + 1_000_000);
        let session = app.session_for(&number, &format!("10.2.{i}.1")).await;
        let code = app.last_code(&number);
        let verified: Value = app
            .verify(&session, &number, &code, "10.2.0.1")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(verified["verified"], true);
    }
    app.clock.advance(Duration::from_secs(6 * 60));
    assert_eq!(
        app.register("+447451999901", "10.2.99.1").await.status(),
        200
    );
}

#[tokio::test]
async fn a_bot_score_above_the_threshold_is_refused() {
    let app = spawn_app_with(&[
        ("SIGNAL_GATE_HCAPTCHA__SITEKEY", TEST_SITEKEY_BOT),
        ("SIGNAL_GATE_HCAPTCHA__MAX_SCORE", "0.5"),
    ])
    .await;
    let body = json!({"number": "+447400123456", "captcha": TEST_TOKEN_BOT});
    let response = app.post("/v1/register", &body, "192.0.2.1").await;
    assert_eq!(
        error_of(response).await,
        (403, "captcha_invalid".into(), None)
    );
    assert_eq!(app.signal.calls(), [0; 4]);
}

#[tokio::test]
async fn refused_numbers_look_alike_whatever_refused_them() {
    let app = spawn_app_with(&[("SIGNAL_GATE_POLICY__DENY_COUNTRIES", "49")]).await;
    for last in ["20", "21", "22", "23"] {
        app.register(&format!("+4474009977{last}"), &format!("10.3.{last}.1"))
            .await;
    }
    let mut bodies = Vec::new();
    for (i, number) in ["+449098790000", "+4915123456789", "+447400997724"]
        .iter()
        .enumerate()
    {
        let response = app.register(number, &format!("10.4.{i}.1")).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        bodies.push((status, body));
    }
    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "{bodies:?}"
    );
}

#[tokio::test]
async fn shadow_mode_lets_traffic_through_and_per_rule_overrides_enforce() {
    let shadow = spawn_app_with(&[
        ("SIGNAL_GATE_MODE", "shadow"),
        ("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", "1/1h"),
    ])
    .await;
    for i in 0..3 {
        assert_eq!(
            shadow
                .register(&spread_number(i), "203.0.113.3")
                .await
                .status(),
            200
        );
    }
    let premium = shadow.register("+449098790000", "203.0.113.4").await;
    assert_eq!(
        premium.status(),
        200,
        "shadow mode waives the destination policy too"
    );

    let mixed = spawn_app_with(&[
        ("SIGNAL_GATE_MODE", "shadow"),
        ("SIGNAL_GATE_RULES__REGISTER_PER_IP", "enforce"),
        ("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", "1/1h"),
    ])
    .await;
    assert_eq!(
        mixed
            .register(&spread_number(0), "203.0.113.3")
            .await
            .status(),
        200
    );
    let (status, ..) = error_of(mixed.register(&spread_number(1), "203.0.113.3").await).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn shadow_mode_raises_no_block_so_later_requests_pass_too() {
    let app = spawn_app_with(&[("SIGNAL_GATE_MODE", "shadow")]).await;
    for last in 10..18 {
        let response = app
            .register(&format!("+4474009933{last}"), &format!("10.5.{last}.1"))
            .await;
        assert_eq!(response.status(), 200, "number {last}");
    }
    assert_eq!(app.signal.sms_sent(), 8);
}

#[tokio::test]
async fn refusals_by_the_schedule_do_not_spend_the_prefix_budget() {
    let app = spawn_app_with(&[("SIGNAL_GATE_LIMITS__REGISTER_PER_PREFIX", "5/1h")]).await;
    let requests = (0..20).map(|i| {
        let app = &app;
        async move {
            app.register("+447460111111", &format!("10.30.{i}.1"))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert_eq!(statuses.iter().filter(|s| s.as_u16() == 200).count(), 1);
    // The nineteen refused requests cost the prefix nothing: four more numbers still fit.
    for i in 0..4 {
        let number = format!("+44746{}", 2_000_000 + i * 110_011);
        assert_eq!(
            app.register(&number, &format!("10.31.{i}.1"))
                .await
                .status(),
            200,
            "{number}"
        );
    }
}

#[tokio::test]
async fn parallel_verify_bursts_spend_exactly_the_address_and_number_budgets() {
    let app = spawn_app_with(&[
        ("SIGNAL_GATE_LIMITS__VERIFY_PER_IP", "7/1h"),
        ("SIGNAL_GATE_LIMITS__VERIFY_PER_NUMBER", "5/1h"),
        ("SIGNAL_GATE_LIMITS__WRONG_CODES_PER_SESSION", "100"),
        ("SIGNAL_GATE_LIMITS__WRONG_CODES_PER_NUMBER", "100/1h"),
    ])
    .await;
    let number = spread_number(1);
    let session = app.session_for(&number, "10.40.0.1").await;

    // One address: exactly its budget of verify requests gets past the address check.
    let from_one = (0..50).map(|_| {
        let (app, session) = (&app, &session);
        async move {
            app.verify(session, "+447400123456", "000000", "10.41.0.1")
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(from_one).await;
    assert_eq!(
        statuses.iter().filter(|s| s.as_u16() != 429).count(),
        7,
        "{statuses:?}"
    );

    // One number from fifty addresses: exactly its budget of guesses reaches signal-server.
    let from_many = (0..50).map(|i| {
        let (app, session, number) = (&app, &session, &number);
        async move {
            app.verify(session, number, "000000", &format!("10.42.{i}.1"))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(from_many).await;
    assert_eq!(
        statuses.iter().filter(|s| s.as_u16() == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(app.signal.calls()[3], 5);
}
