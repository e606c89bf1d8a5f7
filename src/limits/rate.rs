//! `N/DURATION` rates and the generic cell rate algorithm (GCRA) that enforces them.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT): the moment at which the
//! key's budget would be whole again. A rate of N per period is a bucket of N tokens that refills
//! at one token every period/N: a burst of N passes at once, then one more each period/N. This is
//! the token bucket signal-server's own limiters use; over a long run it allows N per period, but
//! one period right after a full burst can see up to 2N - 1. The per-number send schedule in
//! SQLite, not this bucket, is what bounds the codes a number receives.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::configuration::{fmt_duration, parse_duration};

/// A budget of `count` requests per `period`, written `5/1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    period: Duration,
}

impl Rate {
    /// # Panics
    /// Never for `count >= 1` and a period of at least a millisecond; this is for constants.
    pub fn new(count: u32, period: Duration) -> Rate {
        assert!(
            count >= 1 && period.as_millis() >= 1,
            "a rate needs a budget and a period"
        );
        Rate { count, period }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn period(&self) -> Duration {
        self.period
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let usage = "expected N/DURATION, for example 10/1h or 20/10m";
        let (count, period) = text.trim().split_once('/').ok_or(usage)?;
        let count: u32 = count.trim().parse().map_err(|_| usage.to_owned())?;
        // "5/h" reads as five an hour.
        let period = period.trim();
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            parse_duration(period)?
        } else {
            parse_duration(&format!("1{period}"))?
        };
        if count == 0 {
            return Err("the budget must be at least 1".into());
        }
        if period < Duration::from_secs(1) || period > Duration::from_secs(366 * 86_400) {
            return Err("the period must be between 1s and a year".into());
        }
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, fmt_duration(self.period))
    }
}

/// The GCRA parameters of a [`Rate`], in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Time one request adds to the TAT.
    emission_ms: u64,
    /// How far the TAT may run ahead of now: the burst.
    tolerance_ms: u64,
}

impl From<Rate> for Gcra {
    fn from(rate: Rate) -> Gcra {
        let period_ms = rate.period.as_millis() as u64;
        let count = u64::from(rate.count);
        // Rounded up, and the burst made of whole emissions: a rounded-down emission with the
        // rest of the period as tolerance let one request in a few milliseconds early.
        let emission_ms = period_ms.div_ceil(count).max(1);
        Gcra {
            emission_ms,
            tolerance_ms: emission_ms * (count - 1),
        }
    }
}

impl Gcra {
    /// Decides one request: `Ok(new_tat)` when it fits, `Err(retry_after_ms)` when not.
    pub fn decide(&self, tat_ms: Option<u64>, now_ms: u64) -> Result<u64, u64> {
        let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
        let allowed_from = tat.saturating_sub(self.tolerance_ms);
        if now_ms < allowed_from {
            return Err(allowed_from - now_ms);
        }
        Ok(tat + self.emission_ms)
    }

    /// The TAT after giving back one request, never earlier than a full bucket.
    pub fn refund(&self, tat_ms: u64, now_ms: u64) -> u64 {
        tat_ms.saturating_sub(self.emission_ms).max(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gcra(text: &str) -> Gcra {
        Gcra::from(text.parse::<Rate>().expect("valid rate"))
    }

    #[test]
    fn rates_read_as_the_design_writes_them() {
        let rate: Rate = "5/1h".parse().expect("valid");
        assert_eq!(
            (rate.count(), rate.period()),
            (5, Duration::from_secs(3600))
        );
        assert_eq!(
            "20/10m".parse::<Rate>().expect("valid").period(),
            Duration::from_secs(600)
        );
        assert_eq!("5/1d".parse::<Rate>().expect("valid").to_string(), "5/1d");
        assert_eq!(
            "3/h".parse::<Rate>().expect("valid").period(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn malformed_rates_are_refused() {
        for bad in [
            "",
            "5",
            "/1h",
            "five/1h",
            "0/1h",
            "5/0s",
            "5/forever",
            "-1/1h",
            "5/500ms",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_burst_of_the_budget_passes_and_the_next_request_waits() {
        let rule = gcra("10/1h");
        let mut tat = None;
        for _ in 0..10 {
            tat = Some(rule.decide(tat, 0).expect("within budget"));
        }
        let wait = rule.decide(tat, 0).expect_err("over budget");
        assert_eq!(wait, 360_000, "one request is restored every six minutes");
        assert!(rule.decide(tat, 360_000).is_ok());
    }

    #[test]
    fn a_refund_gives_back_exactly_one_request() {
        let rule = gcra("2/1h");
        let tat = rule
            .decide(None, 0)
            .and_then(|t| rule.decide(Some(t), 0))
            .expect("burst");
        assert!(rule.decide(Some(tat), 0).is_err());
        let refunded = rule.refund(tat, 0);
        let again = rule.decide(Some(refunded), 0).expect("one request back");
        assert!(rule.decide(Some(again), 0).is_err(), "and only one");
        assert_eq!(rule.refund(0, 5_000), 5_000, "never below a full bucket");
    }

    proptest! {
        #[test]
        fn no_sequence_of_requests_beats_the_budget(
            count in 1u32..50,
            period_s in 1u64..100_000,
            gaps in proptest::collection::vec(0u64..5_000_000, 1..300),
        ) {
            let rule = Gcra::from(Rate::new(count, Duration::from_secs(period_s)));
            let period_ms = period_s * 1000;
            let (mut now, mut tat, mut passed) = (0u64, None, Vec::new());
            for gap in gaps {
                now += gap;
                if let Ok(next) = rule.decide(tat, now) {
                    tat = Some(next);
                    passed.push(now);
                }
            }
            // Between any two passed requests, no more passed than the bucket held plus what
            // it refilled in between.
            let emission_ms = (period_ms / u64::from(count)).max(1);
            for (i, first) in passed.iter().enumerate() {
                for (j, last) in passed.iter().enumerate().skip(i) {
                    let refilled = (last - first) / emission_ms;
                    prop_assert!((j - i + 1) as u64 <= u64::from(count) + refilled);
                }
            }
        }
    }
}
