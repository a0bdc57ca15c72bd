//! Swedish personal identity numbers (personnummer and samordningsnummer):
//! parsing into one canonical form, validation, and redacted printing.
//!
//! # Contract (DESIGN §3)
//!
//! Every accepted spelling is turned into the canonical 12 digits
//! `YYYYMMDDNNNC`. Accepted spellings (surrounding ASCII whitespace is
//! ignored):
//!
//! | form            | example         |
//! |-----------------|-----------------|
//! | `YYMMDD-NNNC`   | `020314-9828`   |
//! | `YYMMDDNNNC`    | `0203149828`    |
//! | `YYMMDD+NNNC`   | `020314+9828` (100 years or older) |
//! | `YYYYMMDDNNNC`  | `200203149828`  |
//! | `YYYYMMDD-NNNC` | `20020314-9828` |
//! | `YYYYMMDD+NNNC` | `20020314+9828` |
//!
//! # Decisions
//!
//! - **Century of the 10-digit forms.** It is derived from a reference date
//!   `today`: the most recent year `<= today.year()` whose last two digits
//!   match and whose date (month, day) is not after `today`; a `+` separator
//!   then subtracts another 100 years. So on 2026-06-15 `260615-…` is 2026,
//!   `260616-…` is 1926 and `260615+…` is 1926.
//! - **12-digit forms** carry their century. Their separator (`-` or `+`)
//!   carries no information and is accepted either way. The check digit does
//!   not cover the century, so it is only checked for plausibility: the birth
//!   date must not lie after `today`.
//! - **Dates** must be real calendar dates (leap years included). A
//!   samordningsnummer has 60 added to the day (61..=91); it is accepted,
//!   keeps its +60 day in the canonical form and is reported by
//!   [`Personnummer::is_samordningsnummer`].
//! - **Serial** `000` is never issued and is refused.
//! - **Check digit** is the Luhn digit over the 9 digits `YYMMDDNNN`.
//! - **The clock.** Parsing needs a reference date, so
//!   [`Personnummer::parse_at`] takes one: the request path passes its
//!   injected clock's date (`state.clock`), command-line tools the date of
//!   the time they already read, tests a fixed date. Nothing in this module
//!   reads the clock, except `Deserialize` (below), which has no date to be
//!   given and so asks [`crate::clock::SystemClock`]; nothing on the request
//!   path deserializes a `Personnummer`. At a Swedish midnight the UTC date
//!   can lag by a day; that only matters for a number whose birthday is that
//!   very day, which is not yet issued anyway.
//!
//! # Personal data (STYLE "Secrets and personal data")
//!
//! A `Personnummer` is built only by parsing. `Debug` and `Display` print
//! `Personnummer(***)`; the digits are given up only through
//! [`Personnummer::expose`] (or [`Personnummer::masked`], which hides the
//! serial and check digit). There is deliberately no `Serialize`, so a number
//! cannot slip into a JSON response or log line by accident; `Deserialize`
//! validates through `parse_at`. Errors never echo the input. The canonical
//! digits are zeroized when the value is dropped.

use std::fmt;

use time::{Date, Month};
use zeroize::Zeroize;

/// Why a string is not a valid personnummer. Messages never contain the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersonnummerError {
    /// Not one of the accepted shapes (wrong length, non-digits, bad separator).
    #[error(
        "personnummer has an invalid format; expected YYMMDD-NNNC, YYMMDD+NNNC, \
         YYMMDDNNNC, YYYYMMDDNNNC or YYYYMMDD-NNNC"
    )]
    Format,
    /// The date part is not a real date (or, with a 4-digit year, lies in the future).
    #[error("personnummer contains an impossible date")]
    Date,
    /// The serial number is `000`, which is never issued.
    #[error("personnummer has serial number 000, which is never issued")]
    Serial,
    /// The Luhn check digit does not match.
    #[error("personnummer check digit does not match")]
    Checksum,
}

/// A validated personnummer or samordningsnummer in canonical `YYYYMMDDNNNC` form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Personnummer {
    /// Exactly 12 ASCII digits.
    canonical: String,
    /// The real birth date (day already reduced by 60 for a samordningsnummer).
    birth_date: Date,
    samordning: bool,
}

impl Personnummer {
    /// Parses any accepted spelling, deriving the century of 10-digit forms
    /// relative to `today` (and refusing a birth date after it).
    pub fn parse_at(s: &str, today: Date) -> Result<Personnummer, PersonnummerError> {
        let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
        let bytes = s.as_bytes();
        if !bytes.is_ascii() {
            return Err(PersonnummerError::Format);
        }
        // Split into (optional century digits, YYMMDD, separator, NNNC).
        let (century, short, sep, tail) = match bytes.len() {
            10 => (None, s.get(..6), None, s.get(6..)),
            11 => (None, s.get(..6), s.get(6..7), s.get(7..)),
            12 => (s.get(..2), s.get(2..8), None, s.get(8..)),
            13 => (s.get(..2), s.get(2..8), s.get(8..9), s.get(9..)),
            _ => return Err(PersonnummerError::Format),
        };
        let (Some(short), Some(tail)) = (short, tail) else {
            return Err(PersonnummerError::Format);
        };
        let plus = match sep {
            None | Some("-") => false,
            Some("+") => true,
            Some(_) => return Err(PersonnummerError::Format),
        };
        if !all_digits(short) || !all_digits(tail) || !century.is_none_or(all_digits) {
            return Err(PersonnummerError::Format);
        }
        let yy = two_digits(short, 0)?;
        let mm = two_digits(short, 2)?;
        let dd_field = two_digits(short, 4)?;
        let (day, samordning) = if dd_field > 60 {
            (dd_field - 60, true)
        } else {
            (dd_field, false)
        };
        let month = Month::try_from(mm).map_err(|_| PersonnummerError::Date)?;

        let year = match century {
            Some(c) => {
                let cc = two_digits(c, 0)?;
                i32::from(cc) * 100 + i32::from(yy)
            }
            None => century_for(yy, month, day, today, plus),
        };
        let birth_date =
            Date::from_calendar_date(year, month, day).map_err(|_| PersonnummerError::Date)?;
        if birth_date > today {
            return Err(PersonnummerError::Date);
        }

        let serial = tail.get(..3).ok_or(PersonnummerError::Format)?;
        if serial == "000" {
            return Err(PersonnummerError::Serial);
        }
        let check = tail
            .as_bytes()
            .get(3)
            .map(|b| b - b'0')
            .ok_or(PersonnummerError::Format)?;
        if luhn(short.bytes().chain(serial.bytes())) != check {
            return Err(PersonnummerError::Checksum);
        }

        let canonical = format!("{year:04}{mm:02}{dd_field:02}{tail}");
        Ok(Personnummer {
            canonical,
            birth_date,
            samordning,
        })
    }

    /// The canonical 12 digits `YYYYMMDDNNNC`. Call only where the real
    /// identifier must leave the process boundary (pseudonymisation, the
    /// vault, a recipient allowed to see it).
    pub fn expose(&self) -> &str {
        &self.canonical
    }

    /// `YYYYMMDD-****`: the birth date part with serial and check digit
    /// hidden, for display in user interfaces.
    pub fn masked(&self) -> String {
        let date = self.canonical.get(..8).unwrap_or_default();
        format!("{date}-****")
    }

    /// True for a samordningsnummer (coordination number, day + 60).
    pub fn is_samordningsnummer(&self) -> bool {
        self.samordning
    }

    /// The real birth date (for a samordningsnummer the day without the +60).
    pub fn birth_date(&self) -> Date {
        self.birth_date
    }
}

impl Drop for Personnummer {
    fn drop(&mut self) {
        self.canonical.zeroize();
    }
}

impl fmt::Debug for Personnummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Personnummer(***)")
    }
}

impl fmt::Display for Personnummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Personnummer(***)")
    }
}

impl<'de> serde::Deserialize<'de> for Personnummer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut raw = String::deserialize(deserializer)?;
        // No date can be passed through serde (module docs, "The clock").
        let today = crate::clock::Clock::now(&crate::clock::SystemClock).date();
        let parsed = Personnummer::parse_at(&raw, today);
        raw.zeroize();
        parsed.map_err(serde::de::Error::custom)
    }
}

/// The year for a 10-digit form: the latest year `<= today.year()` ending in
/// `yy` whose (month, day) is not after today, minus 100 more for `+`.
/// Comparing (month, day) as numbers avoids needing the date to be valid in
/// the candidate year (29 February); validity is checked on the final year.
fn century_for(yy: u8, month: Month, day: u8, today: Date, plus: bool) -> i32 {
    let this_year = today.year();
    let mut year = this_year - (this_year - i32::from(yy)).rem_euclid(100);
    if year == this_year && (u8::from(month), day) > (u8::from(today.month()), today.day()) {
        year -= 100;
    }
    if plus {
        year -= 100;
    }
    year
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// The two-digit number at byte offset `at` (digits already checked).
fn two_digits(s: &str, at: usize) -> Result<u8, PersonnummerError> {
    let pair = s.get(at..at + 2).ok_or(PersonnummerError::Format)?;
    pair.parse().map_err(|_| PersonnummerError::Format)
}

/// Luhn check digit over ASCII digits (weights 2, 1, 2, 1, … from the left,
/// as for the 9 digits `YYMMDDNNN`).
fn luhn(digits: impl Iterator<Item = u8>) -> u8 {
    let sum: u32 = digits
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0'));
            let p = if i % 2 == 0 { d * 2 } else { d };
            p / 10 + p % 10
        })
        .sum();
    // `sum % 10` is < 10, so the result fits in a u8.
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    /// The fixed reference date used by the tests (DOMAIN §7 says "mid-2026").
    const TODAY: Date = date!(2026 - 06 - 15);

    fn parse(s: &str) -> Result<Personnummer, PersonnummerError> {
        Personnummer::parse_at(s, TODAY)
    }

    fn canonical(s: &str) -> String {
        parse(s).expect("valid").expose().to_owned()
    }

    #[test]
    fn demo_personas_parse() {
        for s in [
            "200203149828",
            "198209239865",
            "199905679933",
            "200011029915",
        ] {
            assert_eq!(canonical(s), s);
        }
        let omar = parse("199905679933").expect("valid");
        assert!(omar.is_samordningsnummer());
        assert_eq!(omar.birth_date(), date!(1999 - 05 - 07));
        assert!(!parse("200203149828").expect("valid").is_samordningsnummer());
    }

    #[test]
    fn every_accepted_form_gives_the_canonical_number() {
        for s in [
            "020314-9828",
            "0203149828",
            "200203149828",
            "20020314-9828",
            "20020314+9828",
            " 020314-9828\n",
        ] {
            assert_eq!(canonical(s), "200203149828", "{s:?}");
        }
    }

    #[test]
    fn plus_means_a_hundred_years_more() {
        // 1902-03-14 with the same digits YYMMDDNNNC as Alva's number.
        assert_eq!(canonical("020314+9828"), "190203149828");
    }

    #[test]
    fn the_century_follows_the_reference_date() {
        // 260615 is today: born today, not 100 years ago.
        let n = luhn_number(2026, 6, 15, 123, false);
        let ten = n.get(2..).expect("12 digits");
        assert_eq!(canonical(ten), n);
        // 260616 would be tomorrow, so it is 1926.
        let n = luhn_number(1926, 6, 16, 123, false);
        assert_eq!(canonical(n.get(2..).expect("12 digits")), n);
    }

    #[test]
    fn a_leap_day_is_accepted_only_in_leap_years() {
        let ok = luhn_number(2000, 2, 29, 101, false);
        assert_eq!(canonical(&ok), ok);
        assert_eq!(canonical(ok.get(2..).expect("12 digits")), ok);
        let bad = luhn_number(2001, 2, 29, 101, false);
        assert_eq!(parse(&bad), Err(PersonnummerError::Date));
    }

    #[test]
    fn malformed_input_is_refused_as_format() {
        for s in [
            "",
            "20020314982",
            "2002031498280",
            "020314 9828",
            "020314/9828",
            "0203-149828",
            "2002031-49828",
            "02031a-9828",
            "٢٠٠٢٠٣١٤٩٨٢٨",
            "+0203149828",
        ] {
            assert_eq!(parse(s), Err(PersonnummerError::Format), "{s:?}");
        }
    }

    #[test]
    fn impossible_dates_are_refused() {
        assert_eq!(parse("20020230-0000"), Err(PersonnummerError::Date));
        assert_eq!(parse("021314-9828"), Err(PersonnummerError::Date));
        assert_eq!(parse("020300-9828"), Err(PersonnummerError::Date));
        assert_eq!(parse("020332-9828"), Err(PersonnummerError::Date));
        assert_eq!(parse("020392-9828"), Err(PersonnummerError::Date));
        // A 4-digit year in the future.
        let future = luhn_number(2030, 1, 1, 101, false);
        assert_eq!(parse(&future), Err(PersonnummerError::Date));
    }

    #[test]
    fn serial_000_is_refused() {
        let n = luhn_number(1985, 1, 1, 0, false);
        assert_eq!(parse(&n), Err(PersonnummerError::Serial));
    }

    #[test]
    fn a_wrong_check_digit_is_refused() {
        assert_eq!(parse("200203149827"), Err(PersonnummerError::Checksum));
        assert_eq!(parse("020314-9829"), Err(PersonnummerError::Checksum));
    }

    #[test]
    fn the_number_never_appears_in_debug_display_or_errors() {
        let p = parse("200203149828").expect("valid");
        assert_eq!(format!("{p:?}"), "Personnummer(***)");
        assert_eq!(format!("{p}"), "Personnummer(***)");
        assert_eq!(p.masked(), "20020314-****");
        for bad in ["200203149827", "20020230-9828", "2002031498"] {
            let err = parse(bad).expect_err("invalid").to_string();
            assert!(!err.contains("9828") && !err.contains("0203"), "{err}");
        }
    }

    #[test]
    fn deserialize_validates() {
        let p: Personnummer = serde_json::from_str("\"20020314-9828\"").expect("valid");
        assert_eq!(p.expose(), "200203149828");
        let err = serde_json::from_str::<Personnummer>("\"200203149827\"")
            .expect_err("invalid")
            .to_string();
        assert!(!err.contains("9827"), "{err}");
    }

    /// Builds a canonical number with a correct Luhn digit.
    fn luhn_number(year: i32, month: u8, day: u8, serial: u16, samordning: bool) -> String {
        let dd = if samordning { day + 60 } else { day };
        let nine = format!("{:02}{month:02}{dd:02}{serial:03}", year % 100);
        let c = luhn(nine.bytes());
        format!("{year:04}{month:02}{dd:02}{serial:03}{c}")
    }

    fn valid_number() -> impl Strategy<Value = (Date, u16, bool)> {
        (
            1900i32..=2025,
            1u8..=12,
            1u8..=31,
            1u16..=999,
            any::<bool>(),
        )
            .prop_filter_map("real date", |(y, m, d, serial, sam)| {
                let month = Month::try_from(m).ok()?;
                Some((Date::from_calendar_date(y, month, d).ok()?, serial, sam))
            })
    }

    proptest! {
        #[test]
        fn all_forms_of_a_valid_number_agree((date, serial, sam) in valid_number()) {
            let n = luhn_number(date.year(), u8::from(date.month()), date.day(), serial, sam);
            let (full_date, short_date, tail) = (&n[..8], &n[2..8], &n[8..]);
            let hundred = TODAY.replace_year(TODAY.year() - 100).expect("not a leap day");
            let sep = if date <= hundred { '+' } else { '-' };
            let mut forms = vec![
                n.clone(),
                format!("{full_date}-{tail}"),
                format!("{full_date}+{tail}"),
                format!("{short_date}{sep}{tail}"),
            ];
            if sep == '-' {
                forms.push(format!("{short_date}{tail}"));
            }
            for form in forms {
                let p = parse(&form);
                prop_assert!(p.is_ok(), "{form}: {p:?}");
                let p = p.expect("checked");
                prop_assert_eq!(p.expose(), n.as_str());
                prop_assert_eq!(p.is_samordningsnummer(), sam);
                prop_assert_eq!(p.birth_date(), date);
            }
        }

        /// The check digit covers the 10 digits `YYMMDDNNNC`; the century
        /// digits are outside it (see module docs), so they are not varied.
        #[test]
        fn every_single_digit_change_is_refused(
            (date, serial, sam) in valid_number(),
            pos in 2usize..12,
            delta in 1u8..=9,
        ) {
            let n = luhn_number(date.year(), u8::from(date.month()), date.day(), serial, sam);
            let mut bytes = n.clone().into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).expect("ascii");
            prop_assert!(parse(&changed).is_err(), "{} accepted", changed);
            prop_assert!(parse(&changed[2..]).is_err(), "{} accepted", &changed[2..]);
        }

        #[test]
        fn impossible_dates_are_refused_whatever_the_rest(
            year in 1900i32..=2025,
            (month, day) in prop_oneof![
                Just((2u8, 30u8)),
                Just((2, 31)),
                Just((4, 31)),
                Just((13, 1)),
                Just((0, 1)),
                (1u8..=12).prop_map(|m| (m, 0)),
                (1u8..=12).prop_map(|m| (m, 32)),
            ],
            serial in 1u16..=999,
        ) {
            let n = luhn_number(year, month, day, serial, false);
            prop_assert_eq!(parse(&n), Err(PersonnummerError::Date));
        }
    }
}
