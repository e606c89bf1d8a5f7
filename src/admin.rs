//! Operator actions, shared by the admin API (on the operator listener) and the
//! `signal-gate admin` command (on the database directly): look up a number, clear its
//! cooldown and lockout, and list, add and remove blocks.
//!
//! Numbers are given in full by the operator and hashed here; nothing is stored, logged or
//! answered with the number in it, only its short keyed hash.

use std::time::Duration;

use serde::Serialize;

use crate::abuse::{BlockKind, Blocklist};
use crate::domain::{NumberKey, PhoneNumber};
use crate::gate::NumberKeys;
use crate::storage::{BlockRecord, GateStore, StoreError};

/// The log target of every operator action.
pub const ADMIN_LOG: &str = "signal_gate::admin";

/// Why an operator action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("not a valid international number")]
    InvalidNumber,
    #[error("invalid block: {0}")]
    InvalidBlock(String),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// What the gate holds on one number.
#[derive(Debug, Serialize)]
pub struct NumberReport {
    pub number: String,
    pub calling_code: u16,
    pub sends_in_window: u32,
    pub next_send_at_ms: Option<u64>,
    pub wrong_codes_in_window: u32,
    pub wrong_codes_window_start_ms: Option<u64>,
    pub blocks: Vec<BlockView>,
}

/// A block as operators see it.
#[derive(Debug, Serialize)]
pub struct BlockView {
    pub kind: String,
    pub key: String,
    pub until_ms: u64,
    pub reason: String,
}

impl From<BlockRecord> for BlockView {
    fn from(block: BlockRecord) -> BlockView {
        BlockView {
            kind: block.kind.as_str().to_owned(),
            key: block.key,
            until_ms: block.until,
            reason: block.reason,
        }
    }
}

/// The operator's tools over one store.
pub struct Admin<'a> {
    pub store: &'a dyn GateStore,
    pub number_key: &'a NumberKey,
    /// The running gate's copy of the blocks, updated at once when there is one.
    pub blocklist: Option<&'a Blocklist>,
    pub now_ms: u64,
    /// Who acts, for the log: the caller's address, or `cli` and the system user.
    pub who: String,
}

fn parse_number(text: &str) -> Result<PhoneNumber, AdminError> {
    PhoneNumber::parse(text).map_err(|_| AdminError::InvalidNumber)
}

impl Admin<'_> {
    /// # Errors
    /// An invalid number or a storage failure.
    pub async fn number_report(&self, number: &str) -> Result<NumberReport, AdminError> {
        let number = parse_number(number)?;
        let hash = self.number_key.hash_number(&number);
        let (schedule, wrong) = self.store.number_state(&hash).await?;
        let keys = NumberKeys::of(self.number_key, &number).block_keys(&number);
        let blocks = self.store.active_blocks(self.now_ms).await?;
        let blocks = blocks
            .into_iter()
            .filter(|b| {
                keys.iter()
                    .any(|(kind, key)| *kind == b.kind && *key == b.key)
            })
            .map(BlockView::from)
            .collect();
        let open_wait = schedule.filter(|s| s.next_send_at > self.now_ms);
        let (who, shown) = (self.who.as_str(), hash.short());
        tracing::info!(target: ADMIN_LOG, who, action = "number_state", number = shown, "operator");
        Ok(NumberReport {
            number: hash.short(),
            calling_code: number.calling_code(),
            sends_in_window: schedule.map_or(0, |s| s.sends),
            next_send_at_ms: open_wait.map(|s| s.next_send_at),
            wrong_codes_in_window: wrong.map_or(0, |w| w.count),
            wrong_codes_window_start_ms: wrong.map(|w| w.window_start),
            blocks,
        })
    }

    /// Clears the number's cooldown, lockout and wrong codes, and any block on the number
    /// itself. True when there was anything to clear.
    ///
    /// # Errors
    /// An invalid number or a storage failure.
    pub async fn clear_number(&self, number: &str) -> Result<bool, AdminError> {
        let number = parse_number(number)?;
        let hash = self.number_key.hash_number(&number);
        let cleared = self.store.clear_number(&hash).await?;
        let unblocked = self
            .store
            .delete_block(BlockKind::Number, &hex::encode(hash.as_bytes()))
            .await?;
        self.refresh().await?;
        let (who, number) = (self.who.as_str(), hash.short());
        tracing::warn!(target: ADMIN_LOG, who, action = "clear_number", number, "operator");
        Ok(cleared || unblocked)
    }

    /// # Errors
    /// A storage failure.
    pub async fn list_blocks(&self) -> Result<Vec<BlockView>, AdminError> {
        let who = self.who.as_str();
        tracing::info!(target: ADMIN_LOG, who, action = "list_blocks", "operator");
        let blocks = self.store.active_blocks(self.now_ms).await?;
        Ok(blocks.into_iter().map(BlockView::from).collect())
    }

    /// Adds a block; for `number` and `number_range` the key is a number, stored hashed.
    ///
    /// # Errors
    /// An invalid kind, key or duration, or a storage failure.
    pub async fn add_block(
        &self,
        kind: &str,
        key: &str,
        duration: Duration,
        reason: &str,
    ) -> Result<BlockView, AdminError> {
        let (kind, key) = self.block_key(kind, key)?;
        if duration.is_zero() || reason.len() > 200 {
            return Err(AdminError::InvalidBlock(
                "a duration above zero and a short reason".into(),
            ));
        }
        let until = self.now_ms + duration.as_millis() as u64;
        let record = BlockRecord {
            kind,
            key,
            until,
            reason: reason.to_owned(),
            created_at: self.now_ms,
        };
        self.store.put_block(&record).await?;
        self.refresh().await?;
        let (kind, key) = (kind.as_str(), kind.shown(&record.key));
        let who = self.who.as_str();
        tracing::warn!(target: ADMIN_LOG, who, action = "add_block", kind, key, until, "operator");
        Ok(record.into())
    }

    /// # Errors
    /// An invalid kind or key, or a storage failure.
    pub async fn remove_block(&self, kind: &str, key: &str) -> Result<bool, AdminError> {
        let (kind, key) = self.block_key(kind, key)?;
        let removed = self.store.delete_block(kind, &key).await?;
        self.refresh().await?;
        let kind = kind.as_str();
        let who = self.who.as_str();
        tracing::warn!(target: ADMIN_LOG, who, action = "remove_block", kind, removed, "operator");
        Ok(removed)
    }

    /// Brings the running gate's copy of the blocks up to date.
    async fn refresh(&self) -> Result<(), AdminError> {
        if let Some(blocklist) = self.blocklist {
            let active = self.store.active_blocks(self.now_ms).await?;
            blocklist.replace_all(active.into_iter().map(|b| (b.kind, b.key, b.until)));
        }
        Ok(())
    }

    /// The stored key of a block named by an operator.
    fn block_key(&self, kind: &str, key: &str) -> Result<(BlockKind, String), AdminError> {
        let kind: BlockKind = kind.parse().map_err(AdminError::InvalidBlock)?;
        let key = key.trim();
        let stored = match kind {
            BlockKind::Number | BlockKind::NumberRange => {
                let number = parse_number(key)?;
                let keys = NumberKeys::of(self.number_key, &number);
                let hash = if kind == BlockKind::Number {
                    keys.hash.as_bytes()
                } else {
                    &keys.range
                };
                hex::encode(hash)
            }
            BlockKind::Country => key
                .trim_start_matches('+')
                .parse::<u16>()
                .map(|c| c.to_string())
                .map_err(|_| AdminError::InvalidBlock("a calling code such as 44".into()))?,
            BlockKind::Prefix => {
                let ok = key.starts_with('+')
                    && key.len() > 2
                    && key[1..].bytes().all(|b| b.is_ascii_digit());
                if !ok {
                    return Err(AdminError::InvalidBlock("a prefix such as +447400".into()));
                }
                key.to_owned()
            }
            BlockKind::Address | BlockKind::AddressBlock => address_key(kind, key)?,
        };
        Ok((kind, stored))
    }
}

/// The only prefix lengths the gate keys addresses on: an address is an IPv4 /32 or IPv6 /64,
/// an address block an IPv4 /24 or IPv6 /48. A bare address names the one it falls in.
fn address_key(kind: BlockKind, key: &str) -> Result<String, AdminError> {
    let (v4, v6) = if kind == BlockKind::Address {
        (32, 64)
    } else {
        (24, 48)
    };
    let usage = || AdminError::InvalidBlock(format!("an address, or a CIDR of /{v4} or /{v6}"));
    let net: ipnet::IpNet = match key.parse::<std::net::IpAddr>() {
        Ok(ip) => ipnet::IpNet::new(ip, if ip.is_ipv4() { v4 } else { v6 }).map_err(|_| usage())?,
        Err(_) => key.parse().map_err(|_| usage())?,
    };
    let wanted = if net.addr().is_ipv4() { v4 } else { v6 };
    if net.prefix_len() != wanted {
        return Err(usage());
    }
    Ok(net.trunc().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_blocks_are_named_on_the_prefixes_the_gate_keys_on() {
        let cases = [
            (BlockKind::Address, "203.0.113.7", Some("203.0.113.7/32")),
            (
                BlockKind::Address,
                "2001:db8:1:2::9",
                Some("2001:db8:1:2::/64"),
            ),
            (BlockKind::Address, "203.0.113.0/24", None),
            (
                BlockKind::AddressBlock,
                "203.0.113.7",
                Some("203.0.113.0/24"),
            ),
            (
                BlockKind::AddressBlock,
                "2001:db8:1::/48",
                Some("2001:db8:1::/48"),
            ),
            (BlockKind::AddressBlock, "2001:db8::/32", None),
            (BlockKind::AddressBlock, "not an address", None),
        ];
        for (kind, key, expected) in cases {
            assert_eq!(
                address_key(kind, key).ok().as_deref(),
                expected,
                "{kind} {key}"
            );
        }
    }
}
