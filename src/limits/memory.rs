//! The in-memory [`LimitStore`]: one bounded cache per rule, holding each key's TAT.
//!
//! The caches are quick_cache's, not moka's (which the gate uses for its other caches): a moka
//! entry costs about 330 bytes, in several allocations, and issue #6 allows a tracked key 300
//! bytes; quick_cache keeps its entries in one slab per shard, about 75 - 110 bytes a key
//! (docs/benchmarks.md). It hashes keys with std's keyed SipHash, so an attacker choosing
//! addresses cannot aim them at one hash bucket.
//!
//! A cache holds at most `capacity` keys and has no timer: a key that has been idle for a
//! whole period is simply a full bucket again, whatever its stored TAT says. quick_cache's
//! eviction (S3-FIFO-like) admits a new key to a small cold queue and moves it to the hot one
//! only when it is used again, so a flood of one-off keys cycles through the cold queue while
//! the keys being limited, which keep coming back, stay hot. A key pushed out while it is still
//! over its budget moves to a second cache that admits only such keys, so a flood of new keys
//! cannot give a limited client a fresh budget either way. That second cache is mostly a queue:
//! pushing a quiet limited key out of it takes about as many newer limited keys as it holds,
//! each an address that has spent its own whole budget. A limited key that comes back goes to
//! the main cache again. Whatever must survive a restart (send schedules, lockouts, wrong-code
//! counts) lives in SQLite, not here.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use quick_cache::sync::{Cache, DefaultLifecycle, EntryAction, EntryResult};
use quick_cache::{Lifecycle, OptionsBuilder, UnitWeighter};

use crate::clock::Clock;

use super::{Gcra, LimitKey, LimitRule, LimitStore, Rate, Verdict};

/// Keys and their TATs, at most a set number of them.
type TatCache<L> = Cache<LimitKey, u64, UnitWeighter, RandomState, L>;

/// The eviction hook of a rule's main cache: keys pushed out while over budget are kept.
#[derive(Clone)]
struct KeepLimited {
    gcra: Gcra,
    clock: Arc<dyn Clock>,
    limited: Arc<TatCache<DefaultLifecycle<LimitKey, u64>>>,
}

impl Lifecycle<LimitKey, u64> for KeepLimited {
    type RequestState = ();

    fn begin_request(&self) {}

    fn on_evict(&self, _: &mut (), key: LimitKey, tat: u64) {
        if self.gcra.decide(Some(tat), self.clock.now_ms()).is_err() {
            self.limited.insert(key, tat);
        }
    }
}

/// Share of a main cache for keys used more than once; the rest admits new keys. quick_cache's
/// default: a flood of one-off keys cycles through the small rest.
const MAIN_HOT_SHARE: f64 = 0.97;
/// The same for the cache of limited keys, whose keys are mostly written once and read only if
/// their client comes back: most of it is a queue, so a quiet limited key stays until about as
/// many newer limited keys have followed it as the cache holds. With the default share it was
/// pushed out after 3% of that (a test below).
const LIMITED_HOT_SHARE: f64 = 0.1;

/// A cache of at most `capacity` keys (at least one), `hot_share` of it for keys used again.
fn bounded<L>(capacity: u64, hot_share: f64, lifecycle: L) -> TatCache<L>
where
    L: Lifecycle<LimitKey, u64> + Clone,
{
    let capacity = capacity.max(1);
    let options = OptionsBuilder::new()
        .estimated_items_capacity(usize::try_from(capacity).unwrap_or(usize::MAX))
        .weight_capacity(capacity)
        .hot_allocation(hot_share)
        .build();
    match options {
        Ok(options) => Cache::with_options(options, UnitWeighter, RandomState::new(), lifecycle),
        // Only a missing capacity fails, and both are set above; the share is a constant.
        Err(_) => Cache::with(
            capacity as usize,
            capacity,
            UnitWeighter,
            RandomState::new(),
            lifecycle,
        ),
    }
}

struct RuleCache {
    gcra: Gcra,
    tats: TatCache<KeepLimited>,
    /// Keys pushed out of `tats` while over their budget.
    limited: Arc<TatCache<DefaultLifecycle<LimitKey, u64>>>,
}

impl RuleCache {
    fn new(rate: Rate, capacity: u64, clock: Arc<dyn Clock>) -> RuleCache {
        let gcra = Gcra::from(rate);
        let limited = Arc::new(bounded(
            capacity,
            LIMITED_HOT_SHARE,
            DefaultLifecycle::default(),
        ));
        let keep = KeepLimited {
            gcra,
            clock,
            limited: Arc::clone(&limited),
        };
        RuleCache {
            gcra,
            tats: bounded(capacity, MAIN_HOT_SHARE, keep),
            limited,
        }
    }

    /// The key's TAT, from the main cache or, failing that, the limited keys.
    fn tat_of(&self, key: LimitKey) -> Option<u64> {
        self.tats.get(&key).or_else(|| self.limited.get(&key))
    }

    /// Decides and, when the request fits, spends, as one step under the key's shard lock.
    fn spend(&self, key: LimitKey, now_ms: u64) -> Verdict {
        let known = self.tats.entry(&key, None, |_, tat| {
            let decision = self.gcra.decide(Some(*tat), now_ms);
            if let Ok(next_tat) = decision {
                *tat = next_tat;
            }
            EntryAction::Retain(verdict_of(decision))
        });
        match known {
            EntryResult::Retained(verdict) => verdict,
            EntryResult::Vacant(slot) => {
                // Not in the main cache; it may have been pushed out while limited. Either
                // way it is in use again, so it goes back to the main cache.
                let tat = self.limited.get(&key);
                let decision = self.gcra.decide(tat, now_ms);
                // Fails only when the key was removed meanwhile; the spend still counts.
                let _ = match (decision, tat) {
                    (Ok(next_tat), _) => slot.insert(next_tat),
                    (Err(_), Some(limited_tat)) => slot.insert(limited_tat),
                    (Err(_), None) => Ok(()),
                };
                verdict_of(decision)
            }
            // The callback above only retains, and without a timeout nothing times out; were
            // it otherwise, decide without spending rather than guess.
            EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => {
                verdict_of(self.gcra.decide(self.tat_of(key), now_ms))
            }
        }
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
        if spend {
            cache.spend(key, now_ms)
        } else {
            verdict_of(cache.gcra.decide(cache.tat_of(key), now_ms))
        }
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
        // A key no longer cached has nothing to give back; its placeholder is dropped unused.
        let _ = cache.tats.entry(&key, None, |_, tat| {
            *tat = cache.gcra.refund(*tat, now_ms);
            EntryAction::Retain(())
        });
    }

    fn tracked_keys(&self) -> Vec<(LimitRule, u64)> {
        let mut counts: Vec<_> = self
            .rules
            .iter()
            .map(|(rule, c)| (*rule, c.tats.len() as u64))
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
        let cache = &limits.rules[&rule];
        let held = cache.tats.len() + cache.limited.len();
        assert!(held <= 2_000, "bounded: {held}");
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
        assert!(matches!(
            limits.decide(rule, 7, 0, true),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            limits.decide(rule, 7, 0, false),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn a_quiet_limited_key_outlasts_as_many_newly_limited_keys_as_the_caches_hold() {
        let rate = Rate::new(1, Duration::from_secs(3600));
        let rule = LimitRule::RegisterPerAddress;
        let limits = MemoryLimitStore::new(&[(rule, rate)], 1_000, Arc::new(ManualClock::at(0)));
        let limit_key = |key: u128| {
            let _ = limits.decide(rule, key, 0, true);
            let _ = limits.decide(rule, key, 0, true);
        };
        // Both caches full of limited keys, as after a long attack from many addresses.
        (0..3_000).for_each(|key| limit_key(1_000_000 + key));
        limit_key(7);
        // 1,500 more: the main cache's 1,000 and half the limited cache. With quick_cache's
        // default share for the limited cache, 1,100 gave key 7 a fresh budget.
        (0..1_500).for_each(|key| limit_key(5_000_000 + key));
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
