//! How many refusal lines the decision log writes under a flood.
//!
//! A flood of a hundred thousand refusals a second writes as many log lines: megabytes a
//! second of one repeated line, the disk filling, and the writing itself the larger part of
//! what each refusal costs. With `SIGNAL_GATE_LOG__REFUSAL_LINES_PER_SECOND` set to N, each
//! (endpoint, reason, address block) writes N refusal lines a second; the rest are counted,
//! and once the second is over one line per key says how many were not written (`"message":
//! "decisions not logged"`, field `count`). Approvals are always written, and metrics count
//! every decision whatever the log shows. With 0, the default, every decision is written.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::{Endpoint, Reason};
use crate::domain::ClientAddress;

/// Refusal lines a second for one endpoint, reason and address block; 0 writes them all. One
/// setting for the process, set at start-up.
static LINES_PER_KEY_PER_SECOND: AtomicU32 = AtomicU32::new(0);

/// Sets the bound from `SIGNAL_GATE_LOG__REFUSAL_LINES_PER_SECOND`.
pub fn set_lines_per_second(lines: u32) {
    LINES_PER_KEY_PER_SECOND.store(lines, Ordering::Relaxed);
}

fn lines_per_second() -> u32 {
    LINES_PER_KEY_PER_SECOND.load(Ordering::Relaxed)
}

/// Keys counted in one second at most; past this, refusals of new keys are counted under
/// one catch-all key, so a flood from millions of blocks cannot grow this table.
const KEYS_PER_SECOND: usize = 10_000;

struct Written {
    endpoint: Endpoint,
    reason: Reason,
    address_block: String,
    lines: u32,
}

#[derive(Default)]
struct Budget {
    second: u64,
    keys: HashMap<u64, Written>,
}

fn budget() -> &'static Mutex<Budget> {
    static BUDGET: OnceLock<Mutex<Budget>> = OnceLock::new();
    BUDGET.get_or_init(Mutex::default)
}

fn current_second() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_secs()
}

/// True when this refusal's line is written; counts it either way.
pub fn admit(endpoint: Endpoint, reason: Reason, address: &ClientAddress) -> bool {
    let limit = lines_per_second();
    if limit == 0 {
        return true;
    }
    let mut budget = current_budget();
    let crowded = budget.keys.len() >= KEYS_PER_SECOND;
    // The block itself, not its name, is hashed: the name is formatted once per key a second.
    let block = (!crowded).then(|| address.block_key());
    let mut hasher = DefaultHasher::new();
    (endpoint, reason, block).hash(&mut hasher);
    let written = budget
        .keys
        .entry(hasher.finish())
        .or_insert_with(|| Written {
            endpoint,
            reason,
            address_block: block.map_or_else(|| "*".to_owned(), |_| address.block_label()),
            lines: 0,
        });
    written.lines = written.lines.saturating_add(1);
    written.lines <= limit
}

/// Writes the counts of the second that has ended, if it has; called every second by a
/// background job so that the count of a flood's last second is not held back.
pub fn report_finished_second() {
    drop(current_budget());
}

/// The budget of this second, after reporting the one before if it has ended.
fn current_budget() -> std::sync::MutexGuard<'static, Budget> {
    let second = current_second();
    let mut budget = budget().lock().unwrap_or_else(|e| e.into_inner());
    if budget.second != second {
        report(&mut budget);
        budget.second = second;
    }
    budget
}

fn report(budget: &mut Budget) {
    let limit = lines_per_second();
    for written in budget.keys.values() {
        let count = written.lines.saturating_sub(limit);
        if count > 0 {
            tracing::info!(
                target: "signal_gate::decision",
                endpoint = written.endpoint.as_str(),
                outcome = "refused",
                reason = written.reason.as_str(),
                address_block = %written.address_block,
                count,
                "decisions not logged"
            );
        }
    }
    budget.keys.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> ClientAddress {
        let ip = text.parse().expect("an address");
        ClientAddress::resolve(ip, std::iter::empty(), &Default::default())
    }

    #[test]
    fn a_key_writes_its_lines_and_other_keys_keep_theirs() {
        const LIMIT: u32 = 10;
        set_lines_per_second(LIMIT);
        let block = &address("192.0.2.1");
        let started = current_second();
        let mut admitted = 0;
        for _ in 0..100 {
            admitted += u32::from(admit(Endpoint::Register, Reason::RegisterPerIp, block));
        }
        // Another address of the same block shares its budget, within the same second.
        let neighbour = admit(
            Endpoint::Register,
            Reason::RegisterPerIp,
            &address("192.0.2.9"),
        );
        if current_second() == started {
            assert!(!neighbour, "one budget per block");
        }
        // The run may cross into the next second once, which restores the budget once.
        assert!((LIMIT..=2 * LIMIT).contains(&admitted), "{admitted}");
        let other = &address("2001:db8::1");
        assert!(admit(Endpoint::Register, Reason::RegisterPerIp, other));
        assert!(
            admit(Endpoint::Verify, Reason::VerifyPerIp, block),
            "its own budget"
        );
    }
}
