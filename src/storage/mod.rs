//! Persisted per-number state: send schedules, sessions, wrong-code counts.
//!
//! The pipeline talks to a [`GateStore`] only. The SQLite store is the one shipped; a shared
//! store for several gates can implement the same trait. The decisions themselves are pure
//! functions in [`policy`], so every store applies exactly the same rules.

pub mod policy;
mod sqlite;

pub use policy::{GuessBudget, GuessRefusal, SendSchedule, SendWait};
pub use sqlite::SqliteStore;

use async_trait::async_trait;

use crate::abuse::{BlockKind, SendStats};
use crate::domain::{NumberHash, SessionHash};
use policy::{GuessState, SendState};

/// Storage could not answer; the client gets a 503 and nothing is let through.
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

/// A send slot taken from a number's schedule, to be given back if no code went out.
#[derive(Clone, Debug)]
pub struct SendClaim {
    pub number: NumberHash,
    pub before: Option<SendState>,
    pub after: SendState,
}

/// A number's send schedule as one read found it. A claim made from it
/// ([`GateStore::claim_send`]) is written only if the row still holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleRead {
    pub state: Option<SendState>,
    /// When the number may next be sent a code, if not at the time of reading.
    pub wait: Option<SendWait>,
}

/// One wrong-code unit taken from a session's and a number's budgets before the code is
/// checked, to be given back if the code was right or was never checked.
#[derive(Clone, Debug)]
pub struct GuessClaim {
    pub session: SessionHash,
    pub number: NumberHash,
    pub after: GuessState,
}

/// What the gate knows of a session it created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub number: NumberHash,
    pub expires_at: u64,
    pub wrong_codes: u32,
    pub verified: bool,
}

/// A block as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    pub kind: BlockKind,
    pub key: String,
    pub until: u64,
    pub reason: String,
    pub created_at: u64,
}

/// A code that was sent, for pumping statistics.
#[derive(Clone, Debug)]
pub struct SendRecord {
    pub session: SessionHash,
    pub sent_at: u64,
    pub calling_code: u16,
    /// Keyed hashes of the number's prefix and of the client's address block.
    pub prefix: [u8; 32],
    pub address_block: [u8; 32],
}

/// What pruning may remove: rows whose time has passed, and send records past their age or
/// beyond the row bound.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub now: u64,
    /// The longest window any per-number row can still matter in.
    pub longest_window_ms: u64,
    pub sends_max_age_ms: u64,
    pub sends_max_rows: u64,
}

/// Rows removed by one pruning pass, per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub sessions: u64,
    pub schedules: u64,
    pub wrong_codes: u64,
    pub blocks: u64,
    pub sends: u64,
}

/// Which sends a statistic counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsScope {
    All,
    Country(u16),
    Prefix([u8; 32]),
    AddressBlock([u8; 32]),
}

impl StatsScope {
    /// All traffic and whole countries: scopes whose count reads every send in them.
    pub fn is_wide(&self) -> bool {
        matches!(self, StatsScope::All | StatsScope::Country(_))
    }
}

#[async_trait]
pub trait GateStore: Send + Sync {
    /// The number's schedule, and when it may next be sent a code if not now; spends nothing.
    async fn read_schedule(
        &self,
        number: &NumberHash,
        now: u64,
    ) -> Result<ScheduleRead, StoreError>;

    /// Takes the next send slot of the number's schedule in one atomic step, or says when the
    /// next one opens. `seen`, a read made earlier in the same request, spares reading the
    /// schedule again when the row has not changed since; when it has, the store reads it.
    async fn claim_send(
        &self,
        number: &NumberHash,
        now: u64,
        seen: Option<&ScheduleRead>,
    ) -> Result<Result<SendClaim, SendWait>, StoreError>;

    /// Gives a claimed slot back because no code was sent.
    async fn release_send(&self, claim: &SendClaim) -> Result<(), StoreError>;

    async fn create_session(
        &self,
        session: &SessionHash,
        number: &NumberHash,
        now: u64,
        expires_at: u64,
    ) -> Result<(), StoreError>;

    async fn find_session(
        &self,
        session: &SessionHash,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Takes one wrong-code unit from the session and the number in one atomic step.
    async fn claim_guess(
        &self,
        session: &SessionHash,
        number: &NumberHash,
        now: u64,
    ) -> Result<Result<GuessClaim, GuessRefusal>, StoreError>;

    /// Gives the unit back: the code was right, or it was never checked.
    async fn release_guess(&self, claim: &GuessClaim) -> Result<(), StoreError>;

    /// Marks the session verified, and its send with it.
    async fn mark_verified(&self, session: &SessionHash, now: u64) -> Result<(), StoreError>;

    /// A number's schedule and wrong-code count, for operators.
    async fn number_state(
        &self,
        number: &NumberHash,
    ) -> Result<(Option<SendState>, Option<GuessState>), StoreError>;

    /// Writes a row under `probe` and removes it again in one committed transaction: proof for
    /// readiness that writes reach the database file, which a write that changes nothing is not.
    async fn probe_write(&self, probe: &NumberHash) -> Result<(), StoreError>;

    /// Clears a number's cooldown, lockout and wrong codes; true when there was anything.
    async fn clear_number(&self, number: &NumberHash) -> Result<bool, StoreError>;

    /// Adds a block, or lengthens an existing one.
    async fn put_block(&self, block: &BlockRecord) -> Result<(), StoreError>;

    /// Removes a block; false when there was none.
    async fn delete_block(&self, kind: BlockKind, key: &str) -> Result<bool, StoreError>;

    async fn active_blocks(&self, now: u64) -> Result<Vec<BlockRecord>, StoreError>;

    /// Notes a code for pumping statistics, once per session.
    async fn record_send(&self, send: &SendRecord) -> Result<(), StoreError>;

    /// Takes back the note of a code that was never sent.
    async fn forget_send(&self, session: &SessionHash) -> Result<(), StoreError>;

    /// Removes what no decision can need any more.
    async fn prune(&self, retention: Retention) -> Result<Pruned, StoreError>;

    /// Codes sent in `[from, to)` within each scope, in order, and how many of them were
    /// verified; a store may answer all the scopes in one trip.
    async fn send_stats_each(
        &self,
        scopes: &[StatsScope],
        from: u64,
        to: u64,
    ) -> Result<Vec<SendStats>, StoreError>;

    /// [`GateStore::send_stats_each`] of one scope.
    async fn send_stats(
        &self,
        scope: StatsScope,
        from: u64,
        to: u64,
    ) -> Result<SendStats, StoreError> {
        let mut each = self.send_stats_each(&[scope], from, to).await?;
        Ok(each.pop().unwrap_or_default())
    }
}
