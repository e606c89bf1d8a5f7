//! The in-memory [`LimitStore`]: one bounded moka cache per rule, holding each key's TAT.
//!
//! An entry that has been idle for a whole period holds no information (its bucket is full
//! again), so each cache forgets keys after one period of idleness. When a cache is full, moka's
//! TinyLFU admission keeps the keys that are used often; a key it pushes out while that key is
//! still over its budget moves to a second cache that admits only such keys, so a flood of new
//! keys (each of which has spent one unit, not its budget) cannot give a limited client a fresh
//! budget. Pushing a limited key out of that second cache takes more limited keys than it holds.
//! Whatever must survive a restart (send schedules, lockouts, wrong-code counts) lives in
//! SQLite, not here.

use std::collections::HashMap;

use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use std::sync::Arc;

use crate::clock::Clock;

use super::{Gcra, LimitKey, LimitRule, LimitStore, Rate, Verdict};

struct RuleCache {
    gcra: Gcra,
    tats: Cache<LimitKey, u64>,
    /// Keys pushed out of `tats` while over their budget.
    limited: Cache<LimitKey, u64>,
}

impl RuleCache {
    fn new(rate: Rate, capacity: u64, clock: Arc<dyn Clock>) -> RuleCache {
        let gcra = Gcra::from(rate);
        let limited: Cache<LimitKey, u64> = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(rate.period())
            .build();
        let keep = limited.clone();
        let tats = Cache::builder()
            .max_capacity(capacity)
            .time_to_idle(rate.period())
            .eviction_listener(move |key: Arc<LimitKey>, tat: u64, cause| {
                let over_budget = gcra.decide(Some(tat), clock.now_ms()).is_err();
                if cause == RemovalCause::Size && over_budget {
                    keep.insert(*key, tat);
                }
            })
            .build();
        RuleCache {
            gcra,
            tats,
            limited,
        }
    }

    /// The key's TAT, from the main cache or, failing that, the limited keys.
    fn tat_of(&self, key: LimitKey) -> Option<u64> {
        self.tats.get(&key).or_else(|| self.limited.get(&key))
    }
}

/// Budgets kept in bounded in-process caches.
pub struct MemoryLimitStore {
    rules: HashMap<LimitRule, RuleCache>,
}

impl MemoryLimitStore {
    /// One cache per rule, each holding at most `capacity` keys (and as many limited ones);
    /// `clock` is the one decisions are made with.
    pub fn new(
        rates: &[(LimitRule, Rate)],
        capacity: u64,
        clock: Arc<dyn Clock>,
    ) -> MemoryLimitStore {
        let rules = rates
            .iter()
            .map(|(rule, rate)| (*rule, RuleCache::new(*rate, capacity, Arc::clone(&clock))))
            .collect();
        MemoryLimitStore { rules }
    }

    fn decide(&self, rule: LimitRule, key: LimitKey, now_ms: u64, spend: bool) -> Verdict {
        // A rule without a configured rate has no budget to enforce.
        let Some(cache) = self.rules.get(&rule) else {
            return Verdict::Allowed;
        };
        if !spend {
            return verdict_of(cache.gcra.decide(cache.tat_of(key), now_ms));
        }
        let mut verdict = Verdict::Allowed;
        let result = cache.tats.entry(key).and_compute_with(|entry| {
            let tat = entry
                .map(|e| e.into_value())
                .or_else(|| cache.limited.get(&key));
            match cache.gcra.decide(tat, now_ms) {
                Ok(next_tat) => Op::Put(next_tat),
                Err(retry_after_ms) => {
                    verdict = Verdict::Refused { retry_after_ms };
                    Op::Nop
                }
            }
        });
        debug_assert!(matches!(
            (&result, verdict),
            (
                CompResult::Inserted(_) | CompResult::ReplacedWith(_),
                Verdict::Allowed
            ) | (
                CompResult::Unchanged(_) | CompResult::StillNone(_),
                Verdict::Refused { .. }
            )
        ));
        verdict
    }
}

fn verdict_of(decision: Result<u64, u64>) -> Verdict {
    match decision {
        Ok(_) => Verdict::Allowed,
        Err(retry_after_ms) => Verdict::Refused { retry_after_ms },
    }
}

#[async_trait]
impl LimitStore for MemoryLimitStore {
    async fn acquire(&self, rule: LimitRule, key: LimitKey, now_ms: u64) -> Verdict {
        self.decide(rule, key, now_ms, true)
    }

    async fn peek(&self, rule: LimitRule, key: LimitKey, now_ms: u64) -> Verdict {
        self.decide(rule, key, now_ms, false)
    }

    async fn refund(&self, rule: LimitRule, key: LimitKey, now_ms: u64) {
        let Some(cache) = self.rules.get(&rule) else {
            return;
        };
        cache.tats.entry(key).and_compute_with(|entry| match entry {
            Some(entry) => Op::Put(cache.gcra.refund(entry.into_value(), now_ms)),
            None => Op::Nop,
        });
    }

    fn tracked_keys(&self) -> Vec<(LimitRule, u64)> {
        let mut counts: Vec<_> = self
            .rules
            .iter()
            .map(|(rule, c)| (*rule, c.tats.entry_count()))
            .collect();
        counts.sort_by_key(|(rule, _)| rule.name());
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn store(count: u32) -> Arc<MemoryLimitStore> {
        let rate = Rate::new(count, Duration::from_secs(3600));
        let rules = [(LimitRule::RegisterPerAddress, rate)];
        Arc::new(MemoryLimitStore::new(
            &rules,
            10_000,
            Arc::new(ManualClock::at(0)),
        ))
    }

    #[tokio::test]
    async fn peeking_never_spends_the_budget() {
        let limits = store(1);
        for _ in 0..5 {
            assert_eq!(
                limits.peek(LimitRule::RegisterPerAddress, 7, 0).await,
                Verdict::Allowed
            );
        }
        assert_eq!(
            limits.acquire(LimitRule::RegisterPerAddress, 7, 0).await,
            Verdict::Allowed
        );
        let second = limits.acquire(LimitRule::RegisterPerAddress, 7, 0).await;
        assert_eq!(
            second,
            Verdict::Refused {
                retry_after_ms: 3_600_000
            }
        );
        assert!(matches!(
            limits.peek(LimitRule::RegisterPerAddress, 7, 0).await,
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn parallel_callers_spend_exactly_the_budget() {
        let limits = store(25);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let limits = Arc::clone(&limits);
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| {
                            limits.decide(LimitRule::RegisterPerAddress, 1, 0, true)
                                == Verdict::Allowed
                        })
                        .count()
                })
            })
            .collect();
        let passed: usize = threads
            .into_iter()
            .map(|t| t.join().expect("no panic"))
            .sum();
        assert_eq!(passed, 25);
    }

    #[test]
    fn a_flood_of_new_keys_does_not_evict_a_key_being_limited() {
        let rate = Rate::new(1, Duration::from_secs(3600));
        let rules = [(LimitRule::RegisterPerAddress, rate)];
        let limits = MemoryLimitStore::new(&rules, 1_000, Arc::new(ManualClock::at(0)));
        let rule = LimitRule::RegisterPerAddress;
        assert_eq!(limits.decide(rule, 7, 0, true), Verdict::Allowed);
        for key in 0..200_000u128 {
            let _ = limits.decide(rule, 1_000_000 + key, 0, true);
            // The limited client keeps trying, as it would in an attack.
            if key % 100 == 0 {
                assert!(
                    matches!(limits.decide(rule, 7, 0, true), Verdict::Refused { .. }),
                    "{key}"
                );
            }
        }
        let cache = &limits.rules[&rule].tats;
        cache.run_pending_tasks();
        assert!(
            cache.entry_count() <= 1_000,
            "bounded: {}",
            cache.entry_count()
        );
        assert!(matches!(
            limits.decide(rule, 7, 0, true),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn a_limited_key_that_goes_quiet_keeps_its_wait_through_a_flood() {
        let rate = Rate::new(10, Duration::from_secs(3600));
        let rules = [(LimitRule::RegisterPerAddress, rate)];
        let limits = MemoryLimitStore::new(&rules, 1_000, Arc::new(ManualClock::at(0)));
        let rule = LimitRule::RegisterPerAddress;
        let passed = (0..15).filter(|_| limits.decide(rule, 7, 0, true) == Verdict::Allowed);
        assert_eq!(passed.count(), 10);
        // The attack seen in testing: thousands of new addresses, the limited one silent.
        for key in 0..50_000u128 {
            let _ = limits.decide(rule, 1_000_000 + key, 0, true);
            let _ = limits.decide(rule, 1_000_000 + key, 0, false);
            let _ = limits.decide(rule, 1_000_000 + key, 0, true);
        }
        let cache = &limits.rules[&rule];
        cache.tats.run_pending_tasks();
        cache.limited.run_pending_tasks();
        assert!(matches!(
            limits.decide(rule, 7, 0, true),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            limits.decide(rule, 7, 0, false),
            Verdict::Refused { .. }
        ));
    }

    #[tokio::test]
    async fn keys_and_rules_keep_separate_budgets() {
        let limits = store(1);
        assert_eq!(
            limits.acquire(LimitRule::RegisterPerAddress, 1, 0).await,
            Verdict::Allowed
        );
        assert_eq!(
            limits.acquire(LimitRule::RegisterPerAddress, 2, 0).await,
            Verdict::Allowed
        );
        // A rule with no configured rate is not limited at all.
        assert_eq!(
            limits.acquire(LimitRule::VerifyPerAddress, 1, 0).await,
            Verdict::Allowed
        );
    }
}
