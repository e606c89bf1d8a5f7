//! Abuse defenses beyond plain budgets: where codes may go (destination policy), blocks raised
//! by detection or by an operator, sequential-number floods and SMS pumping. Each defense has a
//! reason code ([`crate::decision::Reason`]) and a rule name that shadow mode can override.

mod blocklist;
mod policy;
pub mod pumping;
mod sequential;

pub use blocklist::{BlockKind, Blocklist};
pub use policy::{CountrySet, DestinationPolicy, NumberTypes};
pub use pumping::{PumpingPolicy, SendStats, WideStatsMemo};
pub use sequential::SequenceTracker;

use crate::decision::Reason;

/// The rules an operator can switch between enforce and shadow one by one.
pub const RULE_NAMES: [&str; 14] = [
    "register_per_ip",
    "register_per_block",
    "register_per_number",
    "register_per_prefix",
    "register_per_country",
    "send_schedule",
    "verify_per_ip",
    "verify_per_number",
    "wrong_codes",
    "captcha",
    "destination",
    "blocks",
    "sequential_numbers",
    "sms_pumping",
];

/// The rule a refusal belongs to, or `None` for refusals no mode can waive: malformed input,
/// unknown sessions, outages.
pub fn rule_of(reason: Reason) -> Option<&'static str> {
    use Reason::*;
    let rule = match reason {
        RegisterPerIp => "register_per_ip",
        RegisterPerBlock => "register_per_block",
        RegisterPerNumber => "register_per_number",
        RegisterPerPrefix => "register_per_prefix",
        RegisterPerCountry => "register_per_country",
        SendSchedule => "send_schedule",
        VerifyPerIp => "verify_per_ip",
        VerifyPerNumber => "verify_per_number",
        WrongCodesPerSession | WrongCodesPerNumber => "wrong_codes",
        CaptchaSitekeyMismatch
        | CaptchaReplayed
        | CaptchaRejected
        | CaptchaExpired
        | CaptchaHostnameMismatch
        | CaptchaScore => "captcha",
        DestinationNotAllowed | NumberTypeNotAllowed => "destination",
        NumberBlocked | AddressBlocked => "blocks",
        SequentialNumbers => "sequential_numbers",
        SmsPumping => "sms_pumping",
        _ => return None,
    };
    Some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_name_is_reachable_from_a_reason() {
        use Reason::*;
        let reasons = [
            RegisterPerIp,
            RegisterPerBlock,
            RegisterPerNumber,
            RegisterPerPrefix,
            RegisterPerCountry,
            SendSchedule,
            VerifyPerIp,
            VerifyPerNumber,
            WrongCodesPerNumber,
            CaptchaRejected,
            DestinationNotAllowed,
            NumberBlocked,
            SequentialNumbers,
            SmsPumping,
        ];
        let mut named: Vec<&str> = reasons.iter().filter_map(|r| rule_of(*r)).collect();
        named.sort_unstable();
        let mut all = RULE_NAMES.to_vec();
        all.sort_unstable();
        assert_eq!(named, all);
        assert_eq!(rule_of(InvalidNumber), None);
    }
}
