//! The register pipeline's checks on the client address, the destination and the number's
//! budgets, and the abuse detectors that may raise blocks.

use crate::abuse::{BlockKind, SendStats};
use crate::decision::{DecisionLog, Reason};
use crate::domain::{ClientAddress, PhoneNumber};
use crate::gate::{limit_key_of, Gate, NumberKeys};
use crate::limits::{LimitRule, Verdict};
use crate::storage::{BlockRecord, ScheduleRead, SendWait, StatsScope};

use super::error::storage_failed;
use super::register::spend;
use super::ApiError;

/// How far back the pumping baseline looks.
const BASELINE_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Countries need this many times the sends of a prefix before pumping is judged.
/// A country block shuts out everyone there, so it takes ten times the evidence.
const COUNTRY_SEND_FACTOR: u64 = 10;

/// Blocks on the address, then the address's and its block's budgets.
pub async fn check_address(
    gate: &Gate,
    address: &ClientAddress,
    log: &mut DecisionLog,
) -> Result<(), ApiError> {
    if !gate.blocklist.is_empty() {
        let now = gate.now_ms();
        let keys = [
            (BlockKind::Address, address.limit_label()),
            (BlockKind::AddressBlock, address.block_label()),
        ];
        for (kind, key) in keys {
            if let Some(until) = gate.blocklist.blocked_until(kind, &key, now) {
                let wait = until.saturating_sub(now);
                gate.refuse(ApiError::rate_limited(Reason::AddressBlocked, wait), log)?;
            }
        }
    }
    let (ip, block) = (address.limit_key(), address.block_key());
    spend(
        gate,
        LimitRule::RegisterPerAddress,
        ip,
        Reason::RegisterPerIp,
        log,
    )
    .await?;
    spend(
        gate,
        LimitRule::RegisterPerBlock,
        block,
        Reason::RegisterPerBlock,
        log,
    )
    .await
}

/// Where the code would go: country lists, number types, and blocks on the number, its range,
/// any of its prefixes, or its country.
pub fn check_destination(
    gate: &Gate,
    number: &PhoneNumber,
    keys: &NumberKeys,
    log: &mut DecisionLog,
) -> Result<(), ApiError> {
    if let Err(reason) = gate.policy.check(number) {
        gate.refuse(ApiError::refuse(reason), log)?;
    }
    if gate.blocklist.is_empty() {
        return Ok(());
    }
    let now = gate.now_ms();
    let candidates = keys.block_keys(number);
    let blocked = candidates
        .iter()
        .any(|(kind, key)| gate.blocklist.blocked_until(*kind, key, now).is_some());
    if blocked {
        gate.refuse(ApiError::refuse(Reason::NumberBlocked), log)?;
    }
    Ok(())
}

/// The in-memory budgets of a number's prefix and country. The number's own budget is its
/// send schedule, kept in the database.
pub fn number_budget_keys(keys: &NumberKeys) -> [(LimitRule, u128); 2] {
    [
        (LimitRule::RegisterPerPrefix, limit_key_of(&keys.prefix)),
        (LimitRule::RegisterPerCountry, u128::from(keys.calling_code)),
    ]
}

/// The reason a send-schedule wait is reported under.
pub fn reason_of_wait(wait: SendWait) -> Reason {
    match wait {
        SendWait::Cooldown { .. } => Reason::SendSchedule,
        SendWait::WindowSpent { .. } => Reason::RegisterPerNumber,
    }
}

fn reason_of(rule: LimitRule) -> Reason {
    match rule {
        LimitRule::RegisterPerPrefix => Reason::RegisterPerPrefix,
        _ => Reason::RegisterPerCountry,
    }
}

/// Before the captcha: looks at the number's budgets and send schedule, and refuses with the
/// longest wait of those that refuse. The schedule as read is returned for the claim.
pub async fn peek_number_budgets(
    gate: &Gate,
    keys: &NumberKeys,
    log: &mut DecisionLog,
) -> Result<ScheduleRead, ApiError> {
    let now = gate.now_ms();
    let mut longest: Option<(u64, Reason)> = None;
    for (rule, key) in number_budget_keys(keys) {
        if let Verdict::Refused { retry_after_ms } = gate.limits.peek(rule, key, now).await {
            longest = longest.max(Some((retry_after_ms, reason_of(rule))));
        }
    }
    let read = gate
        .store
        .read_schedule(&keys.hash, now)
        .await
        .map_err(storage_failed)?;
    let schedule = read
        .wait
        .map(|wait| (wait.until().saturating_sub(now), reason_of_wait(wait)));
    if let Some((wait, reason)) = longest.max(schedule) {
        gate.refuse(ApiError::rate_limited(reason, wait), log)?;
    }
    Ok(read)
}

/// After the captcha: spends the number's prefix and country budgets, or none of them.
pub async fn spend_number_budgets(
    gate: &Gate,
    keys: &NumberKeys,
    log: &mut DecisionLog,
) -> Result<(), ApiError> {
    let budgets = number_budget_keys(keys);
    for (spent, (rule, key)) in budgets.iter().enumerate() {
        if let Err(refusal) = spend(gate, *rule, *key, reason_of(*rule), log).await {
            // The budgets spent before this one paid for nothing.
            for (rule, key) in &budgets[..spent] {
                gate.limits.refund(*rule, *key, gate.now_ms()).await;
            }
            return Err(refusal);
        }
    }
    Ok(())
}

/// Sequential-number floods and SMS pumping, judged on requests that passed the captcha.
pub async fn detect_abuse(
    gate: &Gate,
    number: &PhoneNumber,
    address: &ClientAddress,
    keys: &NumberKeys,
    log: &mut DecisionLog,
) -> Result<(), ApiError> {
    let now = gate.now_ms();
    let range = limit_key_of(&keys.range);
    if gate.sequences.observe(range, keys.last_two, now) {
        let key = hex::encode(keys.range);
        raise_block(gate, BlockKind::NumberRange, key, Reason::SequentialNumbers).await?;
        gate.refuse(ApiError::refuse(Reason::SequentialNumbers), log)?;
    }
    if let Some((kind, key)) = pumping_target(gate, number, address, keys, now).await? {
        raise_block(gate, kind, key, Reason::SmsPumping).await?;
        gate.refuse(ApiError::refuse(Reason::SmsPumping), log)?;
    }
    Ok(())
}

/// The prefix, country or address block whose codes go unverified far more than the gate's
/// own traffic does, if any.
async fn pumping_target(
    gate: &Gate,
    number: &PhoneNumber,
    address: &ClientAddress,
    keys: &NumberKeys,
    now: u64,
) -> Result<Option<(BlockKind, String)>, ApiError> {
    let abuse = &gate.abuse;
    let to = now.saturating_sub(abuse.pumping_grace.as_millis() as u64);
    let from = to.saturating_sub(abuse.pumping_window.as_millis() as u64);
    let stats = |scope: StatsScope, from| async move {
        if let Some(recent) = gate.wide_stats.recent(scope, now) {
            return Ok(recent);
        }
        let counted = gate
            .store
            .send_stats(scope, from, to)
            .await
            .map_err(storage_failed)?;
        gate.wide_stats.remember(scope, now, counted);
        Ok::<_, ApiError>(counted)
    };
    let baseline =
        PumpingBaseline::of(stats(StatsScope::All, to.saturating_sub(BASELINE_WINDOW_MS)).await?);
    let min = gate.pumping.min_sends;
    let block_hash = gate
        .number_key
        .hash_labelled("block", &address.block_label());
    // The prefix and the address block change with every request, so no memo holds them;
    // they are counted together, in one trip to the store.
    let narrow = [
        StatsScope::Prefix(keys.prefix),
        StatsScope::AddressBlock(block_hash),
    ];
    let counting = gate.store.send_stats_each(&narrow, from, to);
    let narrow_counts = counting.await.map_err(storage_failed)?;
    let narrow_targets = [
        (BlockKind::Prefix, number.prefix().to_owned()),
        (BlockKind::AddressBlock, address.block_label()),
    ];
    for (observed, target) in narrow_counts.into_iter().zip(narrow_targets) {
        if gate.pumping.is_pumping(observed, baseline.0, min) {
            return Ok(Some(target));
        }
    }
    let country = stats(StatsScope::Country(keys.calling_code), from).await?;
    if gate
        .pumping
        .is_pumping(country, baseline.0, min * COUNTRY_SEND_FACTOR)
    {
        return Ok(Some((BlockKind::Country, keys.calling_code.to_string())));
    }
    Ok(None)
}

struct PumpingBaseline(f64);

impl PumpingBaseline {
    fn of(global: SendStats) -> PumpingBaseline {
        PumpingBaseline(crate::abuse::PumpingPolicy::baseline(global))
    }
}

/// Persists a block, adds it to the in-memory copy and raises the alert. In shadow mode only
/// the alert is raised, marked as such: shadow mode refuses nothing, later requests included.
async fn raise_block(
    gate: &Gate,
    kind: BlockKind,
    key: String,
    reason: Reason,
) -> Result<(), ApiError> {
    if !gate.enforces(reason) {
        let shown = kind.shown(&key);
        let details = serde_json::json!({"kind": kind.as_str(), "shadow": true});
        gate.alerts.raise(reason.as_str(), &shown, details);
        return Ok(());
    }
    let now = gate.now_ms();
    let until = now + gate.abuse.block_duration.as_millis() as u64;
    let record = BlockRecord {
        kind,
        key: key.clone(),
        until,
        reason: reason.as_str().to_owned(),
        created_at: now,
    };
    gate.store
        .put_block(&record)
        .await
        .map_err(storage_failed)?;
    gate.blocklist.insert(kind, key, until);
    let shown = kind.shown(&record.key);
    let details = serde_json::json!({"kind": kind.as_str(), "untilMs": until});
    gate.alerts.raise(reason.as_str(), &shown, details);
    Ok(())
}
