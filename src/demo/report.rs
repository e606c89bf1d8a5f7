//! The demo's figures: one tally per traffic class, as a table and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

/// What one traffic class did and what it got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassTally {
    pub requests: u64,
    pub sms_sent: u64,
    pub verified: u64,
    /// Refusals by the code the client saw.
    pub refused: BTreeMap<String, u64>,
    /// Wrong codes that reached signal-server (code guessing classes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guesses_checked: Option<u64>,
    /// The most codes this class may get under the configured limits.
    #[serde(skip)]
    pub sms_allowed: Option<u64>,
    /// The most guesses this class may get checked.
    #[serde(skip)]
    pub guesses_allowed: Option<u64>,
    /// Users that must all verify (the legitimate class).
    #[serde(skip)]
    pub must_verify: Option<u64>,
}

impl ClassTally {
    pub fn refuse(&mut self, code: &str) {
        *self.refused.entry(code.to_owned()).or_default() += 1;
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub classes: BTreeMap<String, ClassTally>,
    /// Every decision by reason code, from the gate's `/metrics`.
    pub reasons: BTreeMap<String, u64>,
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>8} {:>8}  refused",
            "class", "requests", "sms_sent", "verified"
        );
        for (name, tally) in &self.classes {
            let refused: Vec<String> = tally
                .refused
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect();
            let refused = if refused.is_empty() {
                "-".to_owned()
            } else {
                refused.join(" ")
            };
            let _ = writeln!(
                out,
                "{name:<28} {:>8} {:>8} {:>8}  {refused}",
                tally.requests, tally.sms_sent, tally.verified
            );
        }
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let _ = writeln!(out, "\ndecisions by reason, from /metrics:");
        for chunk in reasons.chunks(4) {
            let _ = writeln!(out, "  {}", chunk.join("  "));
        }
        out
    }

    /// # Errors
    /// Never in practice; serde_json cannot fail on these types.
    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// Every expectation the figures break.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for (name, t) in &self.classes {
            if let Some(users) = t.must_verify.filter(|users| t.verified != *users) {
                failures.push(format!("{name}: {} of {users} users verified", t.verified));
            }
            if let Some(allowed) = t.sms_allowed.filter(|allowed| t.sms_sent > *allowed) {
                failures.push(format!(
                    "{name}: {} codes sent, at most {allowed} allowed",
                    t.sms_sent
                ));
            }
            let guesses = t.guesses_checked.unwrap_or(0);
            if let Some(allowed) = t.guesses_allowed.filter(|allowed| guesses > *allowed) {
                failures.push(format!(
                    "{name}: {guesses} guesses checked, at most {allowed}"
                ));
            }
        }
        failures
    }
}
