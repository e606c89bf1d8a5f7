//! SMS pumping: codes sent to numbers that never verify.
//!
//! Pumping fraud asks for codes to numbers the fraudster profits from; nobody types those codes
//! in, so the share of verified codes to the targeted country, prefix or from the attacking
//! address block collapses. The gate compares each key's verified share with its own baseline,
//! the verified share of all its traffic over the last day, and blocks a key that falls far
//! below it. Codes younger than the grace period are left out, since real users need a minute
//! to type their code. The baseline starts from a prior of 80% and moves to the gate's own
//! figures as traffic accumulates, so a small server is not judged on three sends.

/// Codes sent and verified for one key in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    pub sent: u64,
    pub verified: u64,
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
