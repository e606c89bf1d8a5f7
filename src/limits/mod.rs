//! Rate limits: how many requests a key (a client address, an address block, a number) may
//! make in a period.
//!
//! The pipeline talks to a [`LimitStore`] only, so a shared store (for example Redis, for
//! several gates behind one load balancer) can take the place of the in-memory one without
//! touching the pipeline. The arithmetic is the generic cell rate algorithm in [`rate`], a pure
//! function of the stored state and `now`.

mod memory;
mod rate;

pub use memory::MemoryLimitStore;
pub use rate::{Gcra, Rate};

use async_trait::async_trait;

/// The rules that keep a budget in a [`LimitStore`]. Each has its own key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitRule {
    RegisterPerAddress,
    RegisterPerBlock,
    RegisterPerPrefix,
    RegisterPerCountry,
    VerifyPerAddress,
    VerifyPerNumber,
}

impl LimitRule {
    pub const ALL: [LimitRule; 6] = [
        LimitRule::RegisterPerAddress,
        LimitRule::RegisterPerBlock,
        LimitRule::RegisterPerPrefix,
        LimitRule::RegisterPerCountry,
        LimitRule::VerifyPerAddress,
        LimitRule::VerifyPerNumber,
    ];

    /// The rule's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            LimitRule::RegisterPerAddress => "register_per_ip",
            LimitRule::RegisterPerBlock => "register_per_block",
            LimitRule::RegisterPerPrefix => "register_per_prefix",
            LimitRule::RegisterPerCountry => "register_per_country",
            LimitRule::VerifyPerAddress => "verify_per_ip",
            LimitRule::VerifyPerNumber => "verify_per_number",
        }
    }
}

/// A budget's key: an address block or the leading bytes of a number's keyed hash.
pub type LimitKey = u128;

/// Whether the request fits the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over budget; the next request would fit after this many milliseconds.
    Refused {
        retry_after_ms: u64,
    },
}

/// Keeps the budgets of every [`LimitRule`].
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Checks the budget and, when the request fits, spends one unit of it, as one atomic step:
    /// parallel callers can never spend more than the budget holds.
    async fn acquire(&self, rule: LimitRule, key: LimitKey, now_ms: u64) -> Verdict;

    /// Checks the budget without spending it, so a request that a later rule may still refuse
    /// can be turned away early without charging anything.
    async fn peek(&self, rule: LimitRule, key: LimitKey, now_ms: u64) -> Verdict;

    /// Gives back one unit that [`LimitStore::acquire`] spent, for a request that was never
    /// served (the upstream failed), so an outage does not use up a client's budget.
    async fn refund(&self, rule: LimitRule, key: LimitKey, now_ms: u64);

    /// How many keys the store holds for each rule, for metrics.
    fn tracked_keys(&self) -> Vec<(LimitRule, u64)>;
}
