//! Alerts: one WARN log line with `alert=<name>` per rule and key in a window, and, when
//! `SIGNAL_GATE_ALERTS__WEBHOOK_URL` is set, one JSON POST to it, retried with backoff.
//!
//! Abuse detectors raise alerts when they block something. Two more come from counting
//! decisions: a spike of captcha failures, and upstream errors, each above a per-minute
//! threshold. An attack therefore produces one alert per rule and window, not thousands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::sync::Cache;
use reqwest::Url;
use serde_json::{json, Value};

use crate::decision::Reason;
use crate::metrics::Metrics;

/// Attempts per webhook delivery, with waits of 1, 2, 4 ... seconds between them.
const WEBHOOK_ATTEMPTS: u32 = 4;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Alert thresholds and the webhook.
#[derive(Clone, Debug)]
pub struct AlertSettings {
    pub webhook_url: Option<Url>,
    pub dedup_window: Duration,
    pub captcha_failures_per_minute: u32,
    pub upstream_errors_per_minute: u32,
}

/// Decision kinds counted per minute for spike alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Signal {
    CaptchaFailure,
    UpstreamError,
}

pub struct Alerter {
    settings: AlertSettings,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    recent: Cache<String, ()>,
    minutes: Mutex<HashMap<Signal, (u64, u32)>>,
}

impl Alerter {
    pub fn new(settings: AlertSettings, metrics: Arc<Metrics>) -> Alerter {
        let recent = Cache::builder()
            .max_capacity(10_000)
            .time_to_live(settings.dedup_window)
            .build();
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .unwrap_or_default();
        Alerter {
            settings,
            http,
            metrics,
            recent,
            minutes: Mutex::new(HashMap::new()),
        }
    }

    /// Raises an alert, unless the same alert for the same key was raised within the window.
    /// `key` names what the alert is about in a form safe to log (no number, no token).
    pub fn raise(&self, name: &'static str, key: &str, details: Value) {
        let dedup_key = format!("{name}\u{0}{key}");
        if !self.recent.entry(dedup_key).or_insert(()).is_fresh() {
            return;
        }
        self.metrics.alert(name);
        tracing::warn!(alert = name, key, details = %details, "alert");
        if let Some(url) = self.settings.webhook_url.clone() {
            let body = json!({"alert": name, "key": key, "details": details});
            tokio::spawn(deliver(self.http.clone(), url, body));
        }
    }

    /// Counts a decision towards the spike alerts.
    pub fn observe(&self, reason: Reason, now_ms: u64) {
        let (signal, threshold, name) = match reason {
            Reason::CaptchaRejected
            | Reason::CaptchaReplayed
            | Reason::CaptchaExpired
            | Reason::CaptchaHostnameMismatch
            | Reason::CaptchaSitekeyMismatch
            | Reason::CaptchaScore
            | Reason::CaptchaMalformed => (
                Signal::CaptchaFailure,
                self.settings.captcha_failures_per_minute,
                "captcha_failures",
            ),
            Reason::UpstreamUnavailable | Reason::UpstreamTimeout => (
                Signal::UpstreamError,
                self.settings.upstream_errors_per_minute,
                "upstream_errors",
            ),
            _ => return,
        };
        let minute = now_ms / 60_000;
        let count = {
            let mut minutes = self.minutes.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = minutes.entry(signal).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 += 1;
            entry.1
        };
        if count == threshold {
            self.raise(
                name,
                "",
                json!({"perMinute": count, "threshold": threshold}),
            );
        }
    }
}

/// Posts one alert, retrying with exponential backoff.
async fn deliver(http: reqwest::Client, url: Url, body: Value) {
    for attempt in 0..WEBHOOK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        match http.post(url.clone()).json(&body).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::warn!(
                status = response.status().as_u16(),
                attempt,
                "alert webhook refused"
            ),
            Err(error) => tracing::warn!(error = %error, attempt, "alert webhook unreachable"),
        }
    }
    tracing::error!(alert = %body["alert"], "alert webhook gave up");
}
