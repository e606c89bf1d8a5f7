//! SMS pumping: codes sent to numbers that never verify.
//!
//! Pumping fraud asks for codes to numbers the fraudster profits from; nobody types those codes
//! in, so the share of verified codes to the targeted country, prefix or from the attacking
//! address block collapses. The gate compares each key's verified share with its own baseline,
//! the verified share of all its traffic over the last day, and blocks a key that falls far
//! below it. Codes younger than the grace period are left out, since real users need a minute
//! to type their code. The baseline starts from a prior of 80% and moves to the gate's own
//! figures as traffic accumulates, so a small server is not judged on three sends.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::storage::StatsScope;

/// Codes sent and verified for one key in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    pub sent: u64,
    pub verified: u64,
}

/// How long a wide statistic (all traffic, a whole country) is reused, by the decision clock.
/// Counting one reads every send in its window, so on a busy gate a fresh count per request
/// would cost more than everything else a request does; pumping is judged over an hour, and a
/// count ten seconds old judges it just as well.
pub const WIDE_STATS_REUSE_MS: u64 = 10_000;

/// The wide statistics counted in the last [`WIDE_STATS_REUSE_MS`]; one entry per country at
/// most, so it needs no bound of its own.
#[derive(Default)]
pub struct WideStatsMemo {
    counted: Mutex<HashMap<StatsScope, (u64, SendStats)>>,
}

impl WideStatsMemo {
    /// The statistic counted for `scope` less than the reuse time before `now`, if any;
    /// always `None` for a narrow scope, which is counted afresh.
    pub fn recent(&self, scope: StatsScope, now: u64) -> Option<SendStats> {
        let counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        let (at, stats) = counted.get(&scope)?;
        (now >= *at && now - at < WIDE_STATS_REUSE_MS).then_some(*stats)
    }

    /// Keeps a wide scope's count; a narrow scope's is not kept.
    pub fn remember(&self, scope: StatsScope, now: u64, stats: SendStats) {
        if !scope.is_wide() {
            return;
        }
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        counted.insert(scope, (now, stats));
    }
}

/// Weight of the prior, in sends: below this much traffic the prior dominates the baseline.
const PRIOR_WEIGHT: f64 = 20.0;
const PRIOR_SHARE: f64 = 0.8;

/// The pumping thresholds.
#[derive(Clone, Copy, Debug)]
pub struct PumpingPolicy {
    pub ratio: f64,
    pub min_sends: u64,
}

impl PumpingPolicy {
    /// The verified share the gate expects, from its own traffic.
    pub fn baseline(global: SendStats) -> f64 {
        (global.verified as f64 + PRIOR_SHARE * PRIOR_WEIGHT) / (global.sent as f64 + PRIOR_WEIGHT)
    }

    /// True when a key with `min_sends` or more codes verified far less than the baseline.
    pub fn is_pumping(&self, stats: SendStats, baseline: f64, min_sends: u64) -> bool {
        if stats.sent < min_sends.max(1) {
            return false;
        }
        let share = stats.verified as f64 / stats.sent as f64;
        share < baseline * self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PumpingPolicy = PumpingPolicy {
        ratio: 0.3,
        min_sends: 10,
    };

    fn stats(sent: u64, verified: u64) -> SendStats {
        SendStats { sent, verified }
    }

    #[test]
    fn wide_statistics_are_reused_for_ten_seconds_of_decision_time() {
        let memo = WideStatsMemo::default();
        let uk = StatsScope::Country(44);
        assert_eq!(memo.recent(uk, 1_000), None);
        memo.remember(uk, 1_000, stats(50, 10));
        assert_eq!(
            memo.recent(uk, 1_000 + WIDE_STATS_REUSE_MS - 1),
            Some(stats(50, 10))
        );
        assert_eq!(
            memo.recent(uk, 1_000 + WIDE_STATS_REUSE_MS),
            None,
            "counted again"
        );
        assert_eq!(
            memo.recent(uk, 999),
            None,
            "a clock that went back counts again"
        );
        assert_eq!(
            memo.recent(StatsScope::Country(33), 1_000),
            None,
            "per country"
        );
        let prefix = StatsScope::Prefix([7; 32]);
        memo.remember(prefix, 1_000, stats(5, 0));
        assert_eq!(
            memo.recent(prefix, 1_000),
            None,
            "a prefix is counted afresh"
        );
    }

    #[test]
    fn the_baseline_moves_from_the_prior_to_the_gates_own_traffic() {
        assert!((PumpingPolicy::baseline(stats(0, 0)) - 0.8).abs() < 1e-9);
        let busy = PumpingPolicy::baseline(stats(10_000, 5_000));
        assert!((busy - 0.5).abs() < 0.01, "{busy}");
    }

    #[test]
    fn a_key_is_pumping_only_with_enough_sends_far_below_the_baseline() {
        let baseline = 0.8;
        assert!(
            !POLICY.is_pumping(stats(9, 0), baseline, 10),
            "too few sends to judge"
        );
        assert!(POLICY.is_pumping(stats(10, 0), baseline, 10));
        assert!(
            POLICY.is_pumping(stats(40, 9), baseline, 10),
            "22% against 24%"
        );
        assert!(
            !POLICY.is_pumping(stats(40, 10), baseline, 10),
            "25% is not far enough"
        );
        assert!(!POLICY.is_pumping(stats(40, 30), baseline, 10));
    }

    #[test]
    fn a_server_whose_users_rarely_verify_adapts_its_threshold() {
        let baseline = PumpingPolicy::baseline(stats(1_000, 200));
        assert!(
            !POLICY.is_pumping(stats(20, 2), baseline, 10),
            "10% against a 20% baseline"
        );
        assert!(POLICY.is_pumping(stats(20, 0), baseline, 10));
    }
}
