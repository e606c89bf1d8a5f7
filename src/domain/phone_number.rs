//! Phone numbers in canonical E.164, the one form every limit and stored row keys on.
//!
//! People write numbers with spaces, dashes, dots, brackets, `00` or `011` for `+`, digits of
//! other scripts, and invisible characters pasted along with them. All of these are folded into
//! one E.164 string or refused; no other writing of a number can get a budget of its own. A
//! number must be valid for its region (libphonenumber's `isValidNumber`), which is stricter than
//! what signal-server itself checks (`isPossibleNumber`), so nothing the gate forwards is refused
//! upstream as malformed. Numbers written in national form are refused: without a region there
//! is no safe way to read them.

use std::fmt;

use phonenumber::metadata::DATABASE;
use phonenumber::Type;

/// Longest input we look at; real numbers with generous punctuation fit easily.
const MAX_INPUT_CHARS: usize = 64;

/// Digit strings read lately, with libphonenumber's verdict. Its reading costs tens of
/// microseconds, the largest part of a refusal that gets as far as the number, and a flood
/// repeats a few numbers; every writing of one number folds to the same digits first, so
/// they share one entry. Memory only, and bounded.
const RECENTLY_READ: u64 = 10_000;

fn recently_read() -> &'static moka::sync::Cache<String, Result<PhoneNumber, NumberError>> {
    static CACHE: std::sync::OnceLock<moka::sync::Cache<String, Result<PhoneNumber, NumberError>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(|| moka::sync::Cache::new(RECENTLY_READ))
}

/// A phone number that is valid for its region, held in canonical E.164 form.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    e164: String,
    calling_code: u16,
    region: Option<String>,
    kind: Type,
}

/// Why a number was refused; all of them are `invalid_number` to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("the number is empty")]
    Empty,
    #[error("the number is too long")]
    TooLong,
    #[error("the number holds a character that is not a digit or a separator")]
    UnexpectedCharacter,
    #[error("the number must start with + and its country code")]
    NoCountryCode,
    #[error("the number is not a valid number for its country")]
    NotValid,
}

impl PhoneNumber {
    /// Reads a number written the way people write them.
    ///
    /// # Errors
    /// A [`NumberError`] when the text is not one valid international number.
    pub fn parse(raw: &str) -> Result<PhoneNumber, NumberError> {
        let digits = international_digits(raw)?;
        if let Some(known) = recently_read().get(&digits) {
            return known;
        }
        let read = PhoneNumber::from_digits(&digits);
        recently_read().insert(digits, read.clone());
        read
    }

    /// libphonenumber's reading of `+` and `digits`.
    fn from_digits(digits: &str) -> Result<PhoneNumber, NumberError> {
        let parsed =
            phonenumber::parse(None, format!("+{digits}")).map_err(|_| NumberError::NotValid)?;
        if parsed.extension().is_some() || !phonenumber::is_valid(&parsed) {
            return Err(NumberError::NotValid);
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        if e164.len() > 16 {
            return Err(NumberError::NotValid);
        }
        Ok(PhoneNumber {
            calling_code: parsed.code().value(),
            region: parsed.country().id().map(|id| id.as_ref().to_owned()),
            kind: parsed.number_type(&DATABASE),
            e164,
        })
    }

    /// The canonical form, `+` and digits.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The country calling code, such as 44.
    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// The ISO region code, such as `GB`, when the calling code belongs to one region.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The number prefix budgets and blocks key on: `+`, the calling code and the next four
    /// digits, as signal-server's old prefix limiter had it.
    pub fn prefix(&self) -> &str {
        let code_len = self.calling_code.to_string().len();
        let end = (1 + code_len + 4).min(self.e164.len());
        &self.e164[..end]
    }

    /// The number's block of a hundred (all but its last two digits) and its place in it.
    pub fn hundred_block(&self) -> (&str, u8) {
        let split = self.e164.len() - 2;
        let last_two = self.e164[split..].parse().unwrap_or(0);
        (&self.e164[..split], last_two)
    }

    /// The kind of line: mobile, fixed line, premium rate and so on.
    pub fn kind(&self) -> Type {
        self.kind
    }
}

/// Numbers are personal data: `Debug` shows only the country.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber(+{} ...)", self.calling_code)
    }
}

/// Folds the text into the digits after the `+`.
fn international_digits(raw: &str) -> Result<String, NumberError> {
    if raw.chars().count() > MAX_INPUT_CHARS {
        return Err(NumberError::TooLong);
    }
    let mut digits = String::with_capacity(20);
    let mut plus = false;
    for c in raw.chars() {
        if let Some(d) = decimal_digit(c) {
            digits.push(d);
        } else if c == '+' || c == '\u{FF0B}' {
            // A plus only counts before the first digit, and only once.
            if plus || !digits.is_empty() {
                return Err(NumberError::UnexpectedCharacter);
            }
            plus = true;
        } else if !is_separator(c) && !is_invisible(c) {
            return Err(NumberError::UnexpectedCharacter);
        }
    }
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    if plus {
        return Ok(digits);
    }
    // Dialling prefixes: 00 in most of the world, 011 from the North American plan.
    if let Some(rest) = digits
        .strip_prefix("011")
        .or_else(|| digits.strip_prefix("00"))
    {
        if !rest.is_empty() && !rest.starts_with('0') {
            return Ok(rest.to_owned());
        }
    }
    Err(NumberError::NoCountryCode)
}

/// The value of a decimal digit in any of the scripts people type numbers in.
fn decimal_digit(c: char) -> Option<char> {
    const ZEROS: [u32; 22] = [
        0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
        0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x17E0, 0x1810, 0x1946, 0xFF10,
    ];
    let code = u32::from(c);
    ZEROS
        .iter()
        .find(|zero| (**zero..**zero + 10).contains(&code))
        .and_then(|zero| char::from_digit(code - zero, 10))
}

fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '-' | '.' | '(' | ')' | '/' | '\t' | '\u{A0}' | '\u{2000}'..='\u{200A}'
            | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{202F}' | '\u{3000}' | '\u{30FC}'
            | '\u{FF0D}' | '\u{FF0E}' | '\u{FF08}' | '\u{FF09}'
    )
}

/// Zero-width and direction marks that copy-paste brings along.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GB_MOBILE: &str = "+447400123456";

    #[test]
    fn a_number_read_again_is_read_the_same_from_the_recent_readings() {
        for text in ["+44 7400 123457", "+1 900 555 0199", "+44 1"] {
            let first = PhoneNumber::parse(text).map(|n| (n.e164().to_owned(), n.kind()));
            let again = PhoneNumber::parse(text).map(|n| (n.e164().to_owned(), n.kind()));
            assert_eq!(first, again, "{text}");
        }
        assert_eq!(
            PhoneNumber::parse("+44 1").err(),
            Some(NumberError::NotValid),
            "a refusal is remembered as a refusal"
        );
    }

    #[test]
    fn the_ways_people_write_one_number_fold_into_one() {
        let writings = [
            "+447400123456",
            "+44 7400 123456",
            "+44-7400-123-456",
            "+44.7400.123.456",
            "+44 (7400) 123456",
            "0044 7400 123456",
            "011 44 7400 123456",
            "＋４４７４００１２３４５６",
            "+44\u{200B}7400\u{200E}123456",
            "\u{FEFF}+44 7400 123456",
            "+٤٤٧٤٠٠١٢٣٤٥٦",
            "+44\u{A0}7400\u{2009}123456",
        ];
        for writing in writings {
            let number = PhoneNumber::parse(writing).unwrap_or_else(|e| panic!("{writing}: {e}"));
            assert_eq!(number.e164(), GB_MOBILE, "{writing:?}");
        }
    }

    #[test]
    fn refused_writings_say_why() {
        let cases = [
            ("", NumberError::Empty, "nothing at all"),
            ("  - ", NumberError::Empty, "separators only"),
            ("07400 123456", NumberError::NoCountryCode, "national form"),
            (
                "+44 7400 12345a",
                NumberError::UnexpectedCharacter,
                "a letter",
            ),
            (
                "+44 7400 123456;",
                NumberError::UnexpectedCharacter,
                "punctuation",
            ),
            (
                "44+7400123456",
                NumberError::UnexpectedCharacter,
                "a plus in the middle",
            ),
            (
                "++447400123456",
                NumberError::UnexpectedCharacter,
                "two pluses",
            ),
            (
                "+1 555 0100",
                NumberError::NotValid,
                "too short for its country",
            ),
            (
                "+999 1234567",
                NumberError::NotValid,
                "no such country code",
            ),
            (
                "+447400123456 ext. 12",
                NumberError::UnexpectedCharacter,
                "an extension",
            ),
            (
                "+4474001234567890123",
                NumberError::NotValid,
                "too long for E.164",
            ),
            (
                "+44 7400 123456\u{0}",
                NumberError::UnexpectedCharacter,
                "a NUL byte",
            ),
        ];
        for (input, expected, why) in cases {
            assert_eq!(PhoneNumber::parse(input), Err(expected), "{why}: {input:?}");
        }
        let long = "+".to_owned() + &"1".repeat(100);
        assert_eq!(PhoneNumber::parse(&long), Err(NumberError::TooLong));
    }

    #[test]
    fn the_number_knows_its_country_and_kind() {
        let number = PhoneNumber::parse("+44 7400 123456").expect("valid");
        assert_eq!((number.calling_code(), number.region()), (44, Some("GB")));
        assert_eq!(number.kind(), Type::Mobile);
        assert_eq!(number.prefix(), "+447400");
        assert_eq!(number.hundred_block(), ("+4474001234", 56));
        let us = PhoneNumber::parse("+1 201 555 0123").expect("valid");
        assert_eq!(us.prefix(), "+12015");
        assert!(!format!("{number:?}").contains("7400"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(input in "\\PC{0,80}") {
            let _ = PhoneNumber::parse(&input);
        }

        #[test]
        fn a_canonical_number_parses_back_to_itself(input in "[+0-9 ()-]{1,30}") {
            if let Ok(number) = PhoneNumber::parse(&input) {
                let again = PhoneNumber::parse(number.e164()).expect("canonical form is valid");
                prop_assert_eq!(again.e164(), number.e164());
            }
        }

        #[test]
        fn separators_never_change_the_number(
            cut in 3usize..12,
            separator in prop::sample::select(vec![" ", "-", ".", "(", ")", "\u{200B}"]),
        ) {
            let mut written = GB_MOBILE.to_owned();
            written.insert_str(cut, separator);
            prop_assert_eq!(PhoneNumber::parse(&written).map(|n| n.e164().to_owned()),
                Ok(GB_MOBILE.to_owned()));
        }
    }
}
