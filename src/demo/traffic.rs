//! The demo's traffic classes: legitimate users first, then one class per attack.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::numbers::{mobile_number, written, COUNTRIES};
use super::{ClassTally, Report, World};
use crate::emulators::hcaptcha::TEST_SITEKEY;

/// Legitimate users per country.
const USERS_PER_COUNTRY: u32 = 3;

pub async fn run_all(world: &World) -> Report {
    let mut report = Report::default();
    let classes = [
        ("legitimate", legitimate(world).await),
        ("flood_one_address", flood_one_address(world).await),
        ("captcha_bots", captcha_bots(world).await),
        (
            "one_number_many_writings",
            one_number_many_writings(world).await,
        ),
        ("forged_headers", forged_headers(world).await),
        ("ipv6_rotation", ipv6_rotation(world).await),
        ("sequential_numbers", sequential_numbers(world).await),
        ("premium_and_off_list", premium_and_off_list(world).await),
        ("captcha_replay", captcha_replay(world).await),
        ("parallel_burst", parallel_burst(world).await),
        // These two move the clock on, so they come last.
        ("code_guesser", code_guesser(world).await),
        ("sms_pumping", sms_pumping(world).await),
    ];
    for (name, tally) in classes {
        report.classes.insert(name.to_owned(), tally);
    }
    report
}

/// A request's status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl World {
    fn token(&self) -> String {
        self.hcaptcha.issue_token(TEST_SITEKEY, "localhost")
    }

    async fn post(&self, path: &str, body: Value, client_ip: &str) -> Answer {
        let sent = self
            .http
            .post(format!("{}{path}", self.gate_url))
            .header("X-Forwarded-For", client_ip)
            .json(&body)
            .send()
            .await;
        let Ok(response) = sent else {
            return Answer {
                status: 0,
                body: json!({"code": "connection_failed"}),
            };
        };
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer { status, body }
    }

    async fn register(&self, number: &str, captcha: Option<String>, ip: &str) -> Answer {
        let body = match captcha {
            Some(captcha) => json!({"number": number, "captcha": captcha}),
            None => json!({"number": number}),
        };
        self.post("/v1/register", body, ip).await
    }

    async fn verify(&self, session: &str, number: &str, code: &str, ip: &str) -> Answer {
        let body = json!({"sessionId": session, "number": number, "code": code});
        self.post("/v1/verify", body, ip).await
    }

    fn codes_sent_to(&self, numbers: &[String]) -> u64 {
        numbers
            .iter()
            .map(|n| self.signal.inbox(n).len() as u64)
            .sum()
    }
}

impl ClassTally {
    fn count(&mut self, answer: &Answer) {
        self.requests += 1;
        if answer.status != 200 {
            let code = answer.body["code"].as_str().unwrap_or("no_json_body");
            self.refuse(code);
        }
    }
}

/// Real people: many countries, numbers written their own way, each from their own address.
async fn legitimate(world: &World) -> ClassTally {
    let users: Vec<(usize, String)> = COUNTRIES
        .iter()
        .flat_map(|region| (0..USERS_PER_COUNTRY).filter_map(|n| mobile_number(region, n)))
        .enumerate()
        .collect();
    let outcomes = join_all(users.iter().map(|(i, number)| one_user(world, *i, number))).await;
    let mut tally = ClassTally {
        must_verify: Some(users.len() as u64),
        ..ClassTally::default()
    };
    for (answers, verified) in outcomes {
        answers.iter().for_each(|a| tally.count(a));
        tally.verified += u64::from(verified);
    }
    let numbers: Vec<String> = users.into_iter().map(|(_, n)| n).collect();
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally.sms_allowed = Some(numbers.len() as u64);
    tally
}

async fn one_user(world: &World, i: usize, e164: &str) -> (Vec<Answer>, bool) {
    let ip = if i % 4 == 3 {
        format!("2001:db8:{i:x}::10")
    } else {
        format!("198.18.{i}.10")
    };
    let registered = world
        .register(&written(e164, i), Some(world.token()), &ip)
        .await;
    let Some(session) = registered.body["sessionId"].as_str().map(str::to_owned) else {
        return (vec![registered], false);
    };
    let code = world.signal.inbox(e164).pop().unwrap_or_default();
    let verified = world
        .verify(&session, &written(e164, i + 1), &code, &ip)
        .await;
    let ok = verified.body["verified"] == true;
    (vec![registered, verified], ok)
}

/// One address asking for codes to many numbers, each with a solved captcha.
async fn flood_one_address(world: &World) -> ClassTally {
    let numbers: Vec<String> = (0..100)
        .filter_map(|n| mobile_number("GB", 100 + n))
        .collect();
    let answers = join_all(
        numbers
            .iter()
            .map(|n| world.register(n, Some(world.token()), "203.0.113.66")),
    )
    .await;
    let mut tally = ClassTally {
        sms_allowed: Some(10),
        ..ClassTally::default()
    };
    answers.iter().for_each(|a| tally.count(a));
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}

/// Bots without a solved captcha: none, garbage, or a forged token.
async fn captcha_bots(world: &World) -> ClassTally {
    let numbers: Vec<String> = (0..60)
        .filter_map(|n| mobile_number("DE", 100 + n))
        .collect();
    let attempts = numbers.iter().enumerate().map(|(i, number)| {
        let captcha = match i % 3 {
            0 => None,
            1 => Some("not a token at all".to_owned()),
            _ => Some(format!("E1_forged{i}")),
        };
        let ip = format!("192.0.2.{}", i + 1);
        async move { world.register(number, captcha, &ip).await }
    });
    let answers = join_all(attempts).await;
    let mut tally = ClassTally {
        sms_allowed: Some(0),
        ..ClassTally::default()
    };
    answers.iter().for_each(|a| tally.count(a));
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}

/// One victim's number written thirty ways from thirty addresses.
async fn one_number_many_writings(world: &World) -> ClassTally {
    let Some(victim) = mobile_number("FR", 50) else {
        return ClassTally::default();
    };
    let attempts = (0..30).map(|i| {
        let (text, ip) = (written(&victim, i), format!("198.19.{i}.7"));
        async move { world.register(&text, Some(world.token()), &ip).await }
    });
    let answers = join_all(attempts).await;
    let mut tally = ClassTally {
        sms_allowed: Some(1),
        ..ClassTally::default()
    };
    answers.iter().for_each(|a| tally.count(a));
    tally.sms_sent = world.codes_sent_to(&[victim]);
    tally
}

/// Guessing codes for one number, asking for a new session when one is spent.
async fn code_guesser(world: &World) -> ClassTally {
    let Some(target) = mobile_number("ES", 60) else {
        return ClassTally::default();
    };
    let ip = "203.0.113.99";
    let mut tally = ClassTally {
        sms_allowed: Some(2),
        guesses_allowed: Some(5),
        ..ClassTally::default()
    };
    let mut checked = 0;
    for round in 0..2 {
        if round > 0 {
            world.clock.advance(Duration::from_secs(61));
        }
        let registered = world.register(&target, Some(world.token()), ip).await;
        tally.count(&registered);
        let Some(session) = registered.body["sessionId"].as_str() else {
            continue;
        };
        for guess in 0..10 {
            let answer = world
                .verify(session, &target, &format!("{:06}", 900_000 + guess), ip)
                .await;
            tally.count(&answer);
            checked += u64::from(answer.status == 200 && answer.body["verified"] == false);
            tally.verified += u64::from(answer.body["verified"] == true);
        }
    }
    tally.guesses_checked = Some(checked);
    tally.sms_sent = world.codes_sent_to(&[target]);
    tally
}

/// Runs one register per (number, address) pair at once and tallies them.
async fn burst(world: &World, attempts: Vec<(String, Option<String>, String)>) -> ClassTally {
    let answers = join_all(
        attempts
            .iter()
            .map(|(number, captcha, ip)| world.register(number, captcha.clone(), ip)),
    )
    .await;
    let mut tally = ClassTally::default();
    answers.iter().for_each(|a| tally.count(a));
    tally
}

/// Valid mobile numbers of one region, all under prefixes no other class uses.
fn attack_numbers(region: &str, first: u32, count: u32) -> Vec<String> {
    (first..first + count)
        .filter_map(|n| mobile_number(region, n))
        .collect()
}

/// A client behind the proxy writing other addresses in front of its own.
async fn forged_headers(world: &World) -> ClassTally {
    let numbers = attack_numbers("IT", 200, 40);
    let attempts = numbers.iter().enumerate().map(|(i, number)| {
        let forged = format!(
            "{}.{}.{}.{}, 203.0.113.70",
            i + 1,
            i * 3 % 250,
            i % 7,
            i % 250
        );
        (number.clone(), Some(world.token()), forged)
    });
    let mut tally = burst(world, attempts.collect()).await;
    tally.sms_allowed = Some(10);
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}

/// One subscriber rotating through the addresses of its IPv6 /64.
async fn ipv6_rotation(world: &World) -> ClassTally {
    let numbers = attack_numbers("NL", 200, 40);
    let attempts = numbers.iter().enumerate().map(|(i, number)| {
        (
            number.clone(),
            Some(world.token()),
            format!("2001:db8:bad:1:{i:x}::{i:x}"),
        )
    });
    let mut tally = burst(world, attempts.collect()).await;
    tally.sms_allowed = Some(10);
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}

/// Walking through a range of numbers, one address per number.
async fn sequential_numbers(world: &World) -> ClassTally {
    let numbers: Vec<String> = (0..30).map(|i| format!("+34612345{i:03}")).collect();
    let mut tally = ClassTally {
        sms_allowed: Some(3),
        ..ClassTally::default()
    };
    for (i, number) in numbers.iter().enumerate() {
        let answer = world
            .register(number, Some(world.token()), &format!("198.51.{i}.33"))
            .await;
        tally.count(&answer);
    }
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}

/// Toll fraud: premium-rate and shared-cost numbers, and countries outside the allow list.
async fn premium_and_off_list(world: &World) -> ClassTally {
    let numbers: Vec<String> = [
        "+449098790000",
        "+448712345678",
        "+37120123456",
        "+5352123456",
    ]
    .iter()
    .map(|n| n.to_string())
    .collect();
    let attempts = (0..20).map(|i| {
        let number = numbers[i % numbers.len()].clone();
        (
            number,
            Some(world.token()),
            format!("198.51.{}.44", 100 + i),
        )
    });
    let mut tally = burst(world, attempts.collect()).await;
    tally.sms_allowed = Some(0);
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}

/// One solved captcha replayed for many numbers.
async fn captcha_replay(world: &World) -> ClassTally {
    let numbers = attack_numbers("SE", 200, 20);
    let token = world.token();
    let attempts = numbers.iter().enumerate().map(|(i, number)| {
        (
            number.clone(),
            Some(token.clone()),
            format!("198.51.{}.55", 150 + i),
        )
    });
    let mut tally = burst(world, attempts.collect()).await;
    tally.sms_allowed = Some(1);
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}

/// Fifty requests at once for one number, from fifty addresses.
async fn parallel_burst(world: &World) -> ClassTally {
    let Some(victim) = mobile_number("PL", 200) else {
        return ClassTally::default();
    };
    let attempts = (0..50)
        .map(|i| (victim.clone(), Some(world.token()), format!("100.64.{i}.9")))
        .collect();
    let mut tally = burst(world, attempts).await;
    tally.sms_allowed = Some(1);
    tally.sms_sent = world.codes_sent_to(&[victim]);
    tally
}

/// Pumping: codes to one prefix that nobody verifies, then more once the pattern is visible.
async fn sms_pumping(world: &World) -> ClassTally {
    let numbers: Vec<String> = (0..30)
        .map(|i| format!("+4915{:02}{:07}", 10, 1_000_000 + i * 90_001))
        .collect();
    let (first, second) = numbers.split_at(15);
    let attempts = |part: &[String], base: usize| {
        part.iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    Some(world.token()),
                    format!("100.{}.{}.1", 80 + base + i, i),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut tally = burst(world, attempts(first, 0)).await;
    world.clock.advance(Duration::from_secs(6 * 60));
    let later = burst(world, attempts(second, 20)).await;
    tally.requests += later.requests;
    for (code, n) in later.refused {
        *tally.refused.entry(code).or_default() += n;
    }
    tally.sms_allowed = Some(first.len() as u64);
    tally.sms_sent = world.codes_sent_to(&numbers);
    tally
}
