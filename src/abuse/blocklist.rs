//! Blocks: temporary refusals of an address, an address block, a number, a prefix or a country,
//! raised by abuse detection or by an operator.
//!
//! The blocks live in SQLite (so a restart keeps them) and in this in-memory copy (so checking
//! one costs no query). The copy is reloaded from the database every few seconds, which is how
//! blocks written by `signal-gate admin` or by another gate on the same file take effect.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{PoisonError, RwLock};

/// What a block applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockKind {
    /// One client address (IPv4) or IPv6 /64, written in CIDR form.
    Address,
    /// An address block: IPv4 /24 or IPv6 /48.
    AddressBlock,
    /// One number, by its keyed hash in hex.
    Number,
    /// A block of a hundred numbers (all but the last two digits), by its keyed hash in hex.
    NumberRange,
    /// A number prefix: `+`, the calling code and the next four digits.
    Prefix,
    /// A calling code.
    Country,
}

impl BlockKind {
    pub const ALL: [BlockKind; 6] = [
        BlockKind::Address,
        BlockKind::AddressBlock,
        BlockKind::Number,
        BlockKind::NumberRange,
        BlockKind::Prefix,
        BlockKind::Country,
    ];

    /// A key of this kind fit for logs: keys of numbers and ranges are keyed hashes, shown
    /// shortened; prefixes, countries and addresses say nothing about one person.
    pub fn shown(self, key: &str) -> String {
        match self {
            BlockKind::Number | BlockKind::NumberRange => key.chars().take(8).collect(),
            _ => key.to_owned(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BlockKind::Address => "address",
            BlockKind::AddressBlock => "address_block",
            BlockKind::Number => "number",
            BlockKind::NumberRange => "number_range",
            BlockKind::Prefix => "prefix",
            BlockKind::Country => "country",
        }
    }
}

impl fmt::Display for BlockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BlockKind {
    type Err = String;

    fn from_str(text: &str) -> Result<BlockKind, String> {
        BlockKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                "expected address, address_block, number, number_range, prefix or country"
                    .to_owned()
            })
    }
}

/// The active blocks, by kind and key, with the time each ends.
#[derive(Default)]
pub struct Blocklist {
    entries: RwLock<HashMap<(BlockKind, String), u64>>,
}

impl Blocklist {
    /// When the block on this key ends, if one is active.
    pub fn blocked_until(&self, kind: BlockKind, key: &str, now_ms: u64) -> Option<u64> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&(kind, key.to_owned()))
            .copied()
            .filter(|until| *until > now_ms)
    }

    pub fn insert(&self, kind: BlockKind, key: String, until_ms: u64) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let current = entries.entry((kind, key)).or_insert(until_ms);
        *current = (*current).max(until_ms);
    }

    /// Replaces the whole copy with what the database holds.
    pub fn replace_all(&self, blocks: impl IntoIterator<Item = (BlockKind, String, u64)>) {
        let fresh = blocks
            .into_iter()
            .map(|(kind, key, until)| ((kind, key), until))
            .collect();
        *self.entries.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_holds_until_it_ends() {
        let blocks = Blocklist::default();
        blocks.insert(BlockKind::Prefix, "+447400".into(), 1_000);
        assert_eq!(
            blocks.blocked_until(BlockKind::Prefix, "+447400", 999),
            Some(1_000)
        );
        assert_eq!(
            blocks.blocked_until(BlockKind::Prefix, "+447400", 1_000),
            None
        );
        assert_eq!(blocks.blocked_until(BlockKind::Country, "+447400", 0), None);
        blocks.insert(BlockKind::Prefix, "+447400".into(), 500);
        assert_eq!(
            blocks.blocked_until(BlockKind::Prefix, "+447400", 0),
            Some(1_000)
        );
    }
}
