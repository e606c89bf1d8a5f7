//! Destination policy: which countries and which kinds of number may receive codes.
//!
//! Premium-rate, shared-cost and similar numbers are the targets of toll fraud: a code sent
//! there earns the fraudster money and reaches nobody who wants it. They are refused by default.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use phonenumber::metadata::DATABASE;
use phonenumber::Type;

use crate::decision::Reason;
use crate::domain::PhoneNumber;

/// Countries named by calling code (`44`, `+44`) or region code (`GB`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountrySet {
    calling_codes: BTreeSet<u16>,
    regions: BTreeSet<String>,
}

impl CountrySet {
    pub fn is_empty(&self) -> bool {
        self.calling_codes.is_empty() && self.regions.is_empty()
    }

    pub fn contains(&self, number: &PhoneNumber) -> bool {
        self.calling_codes.contains(&number.calling_code())
            || number
                .region()
                .is_some_and(|region| self.regions.contains(region))
    }
}

impl FromStr for CountrySet {
    type Err = String;

    fn from_str(text: &str) -> Result<CountrySet, String> {
        let mut set = CountrySet::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let digits = item.strip_prefix('+').unwrap_or(item);
            if let Ok(code) = digits.parse::<u16>() {
                if DATABASE.by_code(&code).is_none() {
                    return Err(format!("{item:?} is not a country calling code"));
                }
                set.calling_codes.insert(code);
            } else if DATABASE.by_id(&item.to_ascii_uppercase()).is_some() {
                set.regions.insert(item.to_ascii_uppercase());
            } else {
                return Err(format!(
                    "{item:?} is neither a calling code nor a region code"
                ));
            }
        }
        Ok(set)
    }
}

impl fmt::Display for CountrySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes = self.calling_codes.iter().map(|c| format!("+{c}"));
        let items: Vec<String> = codes.chain(self.regions.iter().cloned()).collect();
        f.write_str(&items.join(","))
    }
}

/// Kinds of number, by libphonenumber's classification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NumberTypes(Vec<Type>);

const TYPE_NAMES: [(&str, Type); 17] = [
    ("fixed_line", Type::FixedLine),
    ("mobile", Type::Mobile),
    ("fixed_line_or_mobile", Type::FixedLineOrMobile),
    ("toll_free", Type::TollFree),
    ("premium_rate", Type::PremiumRate),
    ("shared_cost", Type::SharedCost),
    ("personal_number", Type::PersonalNumber),
    ("voip", Type::Voip),
    ("pager", Type::Pager),
    ("uan", Type::Uan),
    ("emergency", Type::Emergency),
    ("voicemail", Type::Voicemail),
    ("short_code", Type::ShortCode),
    ("standard_rate", Type::StandardRate),
    ("carrier", Type::Carrier),
    ("no_international", Type::NoInternational),
    ("unknown", Type::Unknown),
];

impl NumberTypes {
    pub fn contains(&self, kind: Type) -> bool {
        self.0.contains(&kind)
    }
}

impl FromStr for NumberTypes {
    type Err = String;

    fn from_str(text: &str) -> Result<NumberTypes, String> {
        let names = text.split(',').map(str::trim).filter(|i| !i.is_empty());
        let kinds = names.map(|name| {
            TYPE_NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, kind)| *kind)
                .ok_or_else(|| {
                    let known: Vec<&str> = TYPE_NAMES.iter().map(|(n, _)| *n).collect();
                    format!(
                        "{name:?} is not a number type; the types are {}",
                        known.join(", ")
                    )
                })
        });
        Ok(NumberTypes(kinds.collect::<Result<_, _>>()?))
    }
}

impl fmt::Display for NumberTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .0
            .iter()
            .filter_map(|kind| TYPE_NAMES.iter().find(|(_, k)| k == kind).map(|(n, _)| *n))
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Where codes may be sent.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    pub allow: CountrySet,
    pub deny: CountrySet,
    pub deny_types: NumberTypes,
}

impl DestinationPolicy {
    /// # Errors
    /// The reason a number may not receive a code.
    pub fn check(&self, number: &PhoneNumber) -> Result<(), Reason> {
        let allowed = self.allow.is_empty() || self.allow.contains(number);
        if !allowed || self.deny.contains(number) {
            return Err(Reason::DestinationNotAllowed);
        }
        if self.deny_types.contains(number.kind()) {
            return Err(Reason::NumberTypeNotAllowed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> PhoneNumber {
        PhoneNumber::parse(text).expect("valid test number")
    }

    #[test]
    fn countries_are_named_by_calling_code_or_region() {
        let set: CountrySet = "+44, 49,fr".parse().expect("valid");
        assert!(set.contains(&number("+447400123456")));
        assert!(set.contains(&number("+4915123456789")));
        assert!(set.contains(&number("+33612345678")));
        assert!(!set.contains(&number("+12015550123")));
        assert_eq!(set.to_string(), "+44,+49,FR");
        assert!("Narnia".parse::<CountrySet>().is_err());
        assert!("999".parse::<CountrySet>().is_err());
    }

    #[test]
    fn the_policy_applies_allow_deny_and_types() {
        let policy = DestinationPolicy {
            allow: "GB,DE".parse().expect("valid"),
            deny: "49".parse().expect("valid"),
            deny_types: "premium_rate,shared_cost".parse().expect("valid"),
        };
        assert_eq!(policy.check(&number("+447400123456")), Ok(()));
        assert_eq!(
            policy.check(&number("+4915123456789")),
            Err(Reason::DestinationNotAllowed)
        );
        assert_eq!(
            policy.check(&number("+33612345678")),
            Err(Reason::DestinationNotAllowed)
        );
        assert_eq!(
            policy.check(&number("+449098790000")),
            Err(Reason::NumberTypeNotAllowed)
        );
    }
}
