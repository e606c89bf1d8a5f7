//! Phone numbers for the demo: real-looking mobile numbers of many countries, and the many ways
//! people write one number.

use phonenumber::metadata::DATABASE;
use phonenumber::Type;

use crate::domain::PhoneNumber;

/// The countries the legitimate users come from.
pub const COUNTRIES: [&str; 20] = [
    "GB", "DE", "FR", "US", "BR", "IN", "NG", "JP", "AU", "MX", "ES", "IT", "NL", "SE", "PL", "ZA",
    "KE", "AR", "CA", "ID",
];

/// The `n`th valid mobile number of a region, spread out so that neighbours are far apart.
pub fn mobile_number(region: &str, n: u32) -> Option<String> {
    let metadata = DATABASE.by_id(region)?;
    let example = metadata.descriptors().mobile()?.example()?;
    let code = metadata.country_code();
    // Vary the last four digits; skip variants that are not valid mobile numbers.
    let stem = &example[..example.len().saturating_sub(4)];
    (0..200u32)
        .map(|i| (n * 7919 + i * 37) % 10_000)
        .find_map(|tail| {
            let candidate = format!("+{code}{stem}{tail:04}");
            let parsed = PhoneNumber::parse(&candidate).ok()?;
            matches!(parsed.kind(), Type::Mobile | Type::FixedLineOrMobile)
                .then(|| parsed.e164().to_owned())
        })
}

/// One number written in the `style`th of the ways people write numbers.
pub fn written(e164: &str, style: usize) -> String {
    let digits = &e164[1..];
    let (head, tail) = digits.split_at(digits.len().min(3));
    let grouped: Vec<String> = tail
        .as_bytes()
        .chunks(3)
        .map(|c| String::from_utf8_lossy(c).into())
        .collect();
    match style % 8 {
        0 => e164.to_owned(),
        1 => format!("+{head} {}", grouped.join(" ")),
        2 => format!("00{digits}"),
        3 => format!("+{head}-{}", grouped.join("-")),
        4 => format!("(+{head}) {}", grouped.join(".")),
        5 => format!("\u{200B}+{head}\u{00A0}{}", grouped.join("\u{00A0}")),
        6 => format!("＋{}", to_fullwidth(digits)),
        _ => format!("011 {digits}"),
    }
}

fn to_fullwidth(digits: &str) -> String {
    digits
        .chars()
        .map(|c| {
            c.to_digit(10)
                .and_then(|d| char::from_u32(0xFF10 + d))
                .unwrap_or(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_country_yields_distinct_valid_mobiles() {
        for region in COUNTRIES {
            let numbers: Vec<String> = (0..3).filter_map(|n| mobile_number(region, n)).collect();
            assert_eq!(numbers.len(), 3, "{region}");
            assert!(
                numbers[0] != numbers[1] && numbers[1] != numbers[2],
                "{region}"
            );
        }
    }

    #[test]
    fn every_writing_reads_back_as_the_same_number() {
        let e164 = mobile_number("GB", 0).expect("a GB mobile");
        for style in 0..8 {
            let text = written(&e164, style);
            let parsed = PhoneNumber::parse(&text).map(|p| p.e164().to_owned());
            assert_eq!(parsed.as_deref(), Ok(e164.as_str()), "{text:?}");
        }
    }
}
