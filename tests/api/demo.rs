//! The demo end to end: every legitimate user verifies and the report has the promised shape.

use serde_json::Value;

#[tokio::test]
async fn the_demo_verifies_every_user_and_writes_its_report() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("r.json");

    signal_gate::demo::run(Some(&path))
        .await
        .expect("the demo's expectations hold");

    let report: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("report")).expect("json");
    let classes = report["classes"].as_object().expect("classes");
    for name in [
        "legitimate",
        "flood_one_address",
        "captcha_bots",
        "one_number_many_writings",
        "code_guesser",
    ] {
        let class = &classes[name];
        for field in ["requests", "sms_sent", "verified"] {
            assert!(class[field].is_u64(), "{name}.{field}");
        }
        assert!(class["refused"].is_object(), "{name}.refused");
    }
    let legitimate = &classes["legitimate"];
    assert!(legitimate["verified"].as_u64() >= Some(50));
    assert_eq!(legitimate["verified"], legitimate["sms_sent"]);
    assert_eq!(classes["flood_one_address"]["sms_sent"], 10);
    assert_eq!(classes["captcha_bots"]["sms_sent"], 0);
    assert_eq!(classes["one_number_many_writings"]["sms_sent"], 1);
    let at_most = [
        ("forged_headers", 10),
        ("ipv6_rotation", 10),
        ("sequential_numbers", 3),
        ("premium_and_off_list", 0),
        ("captcha_replay", 1),
        ("parallel_burst", 1),
        ("code_guesser", 2),
        ("sms_pumping", 15),
    ];
    for (name, most) in at_most {
        let sent = classes[name]["sms_sent"].as_u64().expect(name);
        assert!(sent <= most, "{name}: {sent} codes, at most {most}");
    }
    assert!(classes["code_guesser"]["guesses_checked"].as_u64() <= Some(5));
    // The gate's own metrics counted the same traffic, by reason code.
    let reasons = report["reasons"]
        .as_object()
        .expect("reasons from /metrics");
    for reason in [
        "approved",
        "register_per_ip",
        "captcha_replayed",
        "sequential_numbers",
        "number_type_not_allowed",
        "wrong_codes_per_session",
    ] {
        assert!(
            reasons.get(reason).and_then(Value::as_u64) > Some(0),
            "{reason} not counted"
        );
    }
}
