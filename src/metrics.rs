//! Prometheus metrics, served in text format on the operator listener at `/metrics`.
//!
//! Label values are the reason codes of [`crate::decision::Reason`], so a metric, a log line
//! and docs/api.md all name a refusal the same way. No label ever carries a number, an address
//! or a token.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::decision::{Endpoint, Reason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    endpoint: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    endpoint: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: &'static str,
}

/// Latency buckets from half a millisecond to about 30 seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Room for each endpoint's reasons in [`Metrics::decision_counters`].
const REASON_SLOTS: usize = 64;

/// Every metric the gate exports.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    /// The counters of `decisions`, each found in the family once: the family's lookup hashes
    /// three strings under a lock, a measurable share of each refusal under a flood.
    decision_counters: Box<[OnceLock<Counter>]>,
    would_refuse: Family<ShadowLabels, Counter>,
    captcha_seconds: Histogram,
    upstream_seconds: Family<NameLabels, Histogram, fn() -> Histogram>,
    storage_seconds: Histogram,
    tracked_keys: Family<NameLabels, Gauge>,
    blocks_active: Gauge,
    alerts: Family<NameLabels, Counter>,
    captcha_fail_open: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("signal_gate");
        let metrics = Metrics {
            decisions: Family::default(),
            decision_counters: (0..4 * REASON_SLOTS).map(|_| OnceLock::new()).collect(),
            would_refuse: Family::default(),
            captcha_seconds: latency_histogram(),
            upstream_seconds: Family::new_with_constructor(latency_histogram),
            storage_seconds: latency_histogram(),
            tracked_keys: Family::default(),
            blocks_active: Gauge::default(),
            alerts: Family::default(),
            captcha_fail_open: Counter::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "decisions",
            "Requests decided, by endpoint, outcome and reason",
            m.decisions.clone(),
        );
        registry.register(
            "would_refuse",
            "Refusals waived by shadow mode, by rule",
            m.would_refuse.clone(),
        );
        registry.register(
            "captcha_duration_seconds",
            "hCaptcha siteverify latency",
            m.captcha_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "signal-server call latency, by step",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "storage_duration_seconds",
            "SQLite decision latency",
            m.storage_seconds.clone(),
        );
        registry.register(
            "tracked_keys",
            "Keys held by each in-memory budget",
            m.tracked_keys.clone(),
        );
        registry.register("blocks_active", "Blocks in force", m.blocks_active.clone());
        registry.register("alerts", "Alerts raised, by name", m.alerts.clone());
        registry.register(
            "malformed_http",
            "Requests the HTTP parser refused before the gate read them, answered with a JSON \
             400, 408 or 431",
            crate::connection::malformed_http_counter(),
        );
        registry.register(
            "captcha_fail_open",
            "Requests let through while hCaptcha was unreachable",
            m.captcha_fail_open.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts a decision; the endpoint and reason name its counter.
    pub fn decision(&self, endpoint: Endpoint, reason: Reason) {
        let labels = || DecisionLabels {
            endpoint: endpoint.as_str(),
            outcome: reason.outcome(),
            reason: reason.as_str(),
        };
        let (endpoint_index, reason_index) = (endpoint as usize, reason as usize);
        let slot = (reason_index < REASON_SLOTS)
            .then(|| {
                self.decision_counters
                    .get(endpoint_index * REASON_SLOTS + reason_index)
            })
            .flatten();
        match slot {
            Some(cell) => cell
                .get_or_init(|| self.decisions.get_or_create(&labels()).clone())
                .inc(),
            None => self.decisions.get_or_create(&labels()).inc(),
        };
    }

    pub fn shadowed(&self, endpoint: &'static str, reason: &'static str) {
        self.would_refuse
            .get_or_create(&ShadowLabels { endpoint, reason })
            .inc();
    }

    pub fn alert(&self, name: &'static str) {
        self.alerts.get_or_create(&NameLabels { name }).inc();
    }

    pub fn fail_open(&self) {
        self.captcha_fail_open.inc();
    }

    /// Times a captcha check.
    pub async fn captcha<T>(&self, call: impl Future<Output = T>) -> T {
        timed_outbound(&self.captcha_seconds, call).await
    }

    /// Times an upstream call.
    pub async fn upstream<T>(&self, step: &'static str, call: impl Future<Output = T>) -> T {
        let histogram = self
            .upstream_seconds
            .get_or_create(&NameLabels { name: step })
            .clone();
        timed_outbound(&histogram, call).await
    }

    /// Times a storage decision.
    pub async fn storage<T>(&self, call: impl Future<Output = T>) -> T {
        timed(&self.storage_seconds, call).await
    }

    /// The text exposition, with the gauges brought up to date first.
    pub fn render(&self, tracked: &[(&'static str, u64)], blocks: usize) -> String {
        for (name, keys) in tracked {
            let keys = i64::try_from(*keys).unwrap_or(i64::MAX);
            self.tracked_keys
                .get_or_create(&NameLabels { name })
                .set(keys);
        }
        self.blocks_active
            .set(i64::try_from(blocks).unwrap_or(i64::MAX));
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn timed<T>(histogram: &Histogram, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    histogram.observe(started.elapsed().as_secs_f64());
    result
}

/// As [`timed`], for a wait outside the gate, which the decision line keeps apart.
async fn timed_outbound<T>(histogram: &Histogram, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = timed(histogram, call).await;
    crate::decision::add_outbound(started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_decision_is_counted_under_its_own_labels() {
        let metrics = Metrics::new();
        for _ in 0..3 {
            metrics.decision(Endpoint::Register, Reason::RegisterPerIp);
        }
        metrics.decision(Endpoint::Verify, Reason::RegisterPerIp);
        metrics.decision(Endpoint::Register, Reason::Approved);
        let text = metrics.render(&[], 0);
        for (endpoint, outcome, reason, count) in [
            ("register", "refused", "register_per_ip", 3),
            ("verify", "refused", "register_per_ip", 1),
            ("register", "approved", "approved", 1),
        ] {
            let line = format!(
                "signal_gate_decisions_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\",\
                 reason=\"{reason}\"}} {count}"
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
