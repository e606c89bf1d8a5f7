//! Sequential-number floods: many distinct numbers of one block of a hundred (numbers equal but
//! for their last two digits) asked for within a short window.
//!
//! Real neighbours rarely register within minutes of each other, while enumeration and pumping
//! walk through a range. Each block's recent numbers are one 100-bit set, so the tracker costs a
//! few dozen bytes per active block. It only sees requests that passed the captcha, so nobody can
//! get a victim's block blocked without solving captchas.

use std::time::Duration;

use moka::ops::compute::Op;
use moka::sync::Cache;

/// Which last-two-digit values of a block were asked for, in the current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockWindow {
    started_ms: u64,
    seen: u128,
}

/// Counts distinct numbers per block of a hundred.
pub struct SequenceTracker {
    blocks: Cache<u128, BlockWindow>,
    window_ms: u64,
    threshold: u32,
}

impl SequenceTracker {
    pub fn new(threshold: u32, window: Duration, capacity: u64) -> SequenceTracker {
        SequenceTracker {
            blocks: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
            window_ms: window.as_millis() as u64,
            threshold,
        }
    }

    /// Notes a request for the number `last_two` of `block`; true when the block has now seen
    /// the threshold of distinct numbers within the window.
    pub fn observe(&self, block: u128, last_two: u8, now_ms: u64) -> bool {
        let mut distinct = 0;
        self.blocks.entry(block).and_compute_with(|entry| {
            let next = advance(
                entry.map(|e| e.into_value()),
                last_two,
                now_ms,
                self.window_ms,
            );
            distinct = next.seen.count_ones();
            Op::Put(next)
        });
        distinct >= self.threshold
    }
}

fn advance(state: Option<BlockWindow>, last_two: u8, now_ms: u64, window_ms: u64) -> BlockWindow {
    let bit = 1u128 << (last_two % 100);
    match state.filter(|s| now_ms < s.started_ms + window_ms) {
        Some(current) => BlockWindow {
            seen: current.seen | bit,
            ..current
        },
        None => BlockWindow {
            started_ms: now_ms,
            seen: bit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_numbers_of_one_block_trip_the_threshold() {
        let tracker = SequenceTracker::new(4, Duration::from_secs(600), 1000);
        assert!(!tracker.observe(7, 10, 0));
        assert!(
            !tracker.observe(7, 10, 1),
            "the same number twice is one number"
        );
        assert!(!tracker.observe(7, 11, 2));
        assert!(
            !tracker.observe(8, 12, 3),
            "another block keeps its own count"
        );
        assert!(!tracker.observe(7, 12, 4));
        assert!(tracker.observe(7, 13, 5));
    }

    #[test]
    fn the_count_starts_over_after_the_window() {
        let tracker = SequenceTracker::new(2, Duration::from_secs(600), 1000);
        assert!(!tracker.observe(1, 1, 0));
        assert!(!tracker.observe(1, 2, 600_000));
        assert!(tracker.observe(1, 3, 600_001));
    }
}
