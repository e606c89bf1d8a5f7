//! The in-memory [`LimitStore`]: one bounded moka cache per rule, holding each key's TAT.
//!
//! An entry that has been idle for a whole period holds no information (its bucket is full
//! again), so each cache forgets keys after one period of idleness. When a cache is full, moka's
//! TinyLFU admission keeps the keys that are used often, so a flood of new keys cannot push out
//! a key that is being limited right now. Whatever must survive a restart (send schedules,
//! lockouts, wrong-code counts) lives in SQLite, not here.

use std::collections::HashMap;

use async_trait::async_trait;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use super::{Gcra, LimitKey, LimitRule, LimitStore, Rate, Verdict};

struct RuleCache {
    gcra: Gcra,
    tats: Cache<LimitKey, u64>,
}

/// Budgets kept in bounded in-process caches.
pub struct MemoryLimitStore {
    rules: HashMap<LimitRule, RuleCache>,
}

impl MemoryLimitStore {
    /// One cache per rule, each holding at most `capacity` keys.
    pub fn new(rates: &[(LimitRule, Rate)], capacity: u64) -> MemoryLimitStore {
        let rules = rates
            .iter()
            .map(|(rule, rate)| {
                let tats = Cache::builder()
                    .max_capacity(capacity)
                    .time_to_idle(rate.period())
                    .build();
                (
                    *rule,
                    RuleCache {
                        gcra: Gcra::from(*rate),
                        tats,
                    },
                )
            })
            .collect();
        MemoryLimitStore { rules }
    }

    fn decide(&self, rule: LimitRule, key: LimitKey, now_ms: u64, spend: bool) -> Verdict {
        // A rule without a configured rate has no budget to enforce.
        let Some(cache) = self.rules.get(&rule) else {
            return Verdict::Allowed;
        };
        if !spend {
            let tat = cache.tats.get(&key);
            return verdict_of(cache.gcra.decide(tat, now_ms));
        }
        let mut verdict = Verdict::Allowed;
        let result = cache.tats.entry(key).and_compute_with(|entry| {
            match cache.gcra.decide(entry.map(|e| e.into_value()), now_ms) {
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
    use std::sync::Arc;
    use std::time::Duration;

    fn store(count: u32) -> Arc<MemoryLimitStore> {
        let rate = Rate::new(count, Duration::from_secs(3600));
        Arc::new(MemoryLimitStore::new(
            &[(LimitRule::RegisterPerAddress, rate)],
            10_000,
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
        let limits = MemoryLimitStore::new(&[(LimitRule::RegisterPerAddress, rate)], 1_000);
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
