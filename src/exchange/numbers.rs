//! Numbers in text (DESIGN §10): on `pseudonymise` and `omit` routes a
//! forwarded string value, at any depth, that contains a personnummer or
//! samordningsnummer in any §3 form is withheld. Its pointer goes into
//! `withheld` and the audit record's `reason` is `identifier_in_text`.
//!
//! # Decisions
//!
//! - A number is anything [`Personnummer::parse_at`] accepts on the
//!   exchange's date (the gateway clock's; date, serial and Luhn checked) in the forms `YYMMDDNNNC`, `YYMMDD-NNNC`, `YYMMDD+NNNC`,
//!   `YYYYMMDDNNNC`, `YYYYMMDD-NNNC` and `YYYYMMDD+NNNC`, starting at any
//!   digit of the string, also inside a longer run of digits: a sender
//!   cannot hide a number by gluing digits to it.
//! - A top-level string that holds a number is withheld as a whole field.
//!   Below the top level only the offending string (or object member whose
//!   name holds a number) is removed; its pointer, relative to the payload
//!   as sent, is listed in `withheld`, and the enclosing top-level field
//!   stays in `forwarded`. Removing an array element shifts the later
//!   elements in the recipient's copy.
//! - JSON numbers are scanned too, by their decimal digits: a personnummer
//!   sent as `200203149828` (not a string) is withheld like a string. A
//!   10-digit form starting with `0` loses that digit as a JSON number and
//!   is then not a §3 form; it is not caught.
//! - Not caught (not §3 forms): digits separated by spaces or other
//!   punctuation, and non-ASCII digits (e.g. fullwidth `２００２…`).
//! - Identifier fields (`x-identifier`) are not scanned: they already carry
//!   the recipient's pseudonym, or were removed.

use serde_json::{Map, Value};
use time::Date;

use crate::policy::Filtered;
use crate::schema::{field_pointer, MessageSchema};
use crate::subject::personnummer::Personnummer;

/// The audit `reason` of an exchange that had a string withheld for a number.
pub const REASON: &str = "identifier_in_text";

/// Lengths of the §3 forms: 10 and 12 digits, with or without a separator.
const FORM_LENGTHS: [usize; 4] = [10, 11, 12, 13];

/// Whether `text` contains a personnummer or samordningsnummer in any §3
/// form, as numbers are on `today`.
pub fn contains_personnummer(text: &str, today: Date) -> bool {
    text.bytes().enumerate().any(|(start, b)| {
        b.is_ascii_digit()
            && FORM_LENGTHS.iter().any(|len| {
                text.get(start..start + len)
                    .is_some_and(|candidate| Personnummer::parse_at(candidate, today).is_ok())
            })
    })
}

/// Whether a JSON leaf holds a number: a string containing one, or a JSON
/// number whose digits are one (`{"ref": 200203149828}`).
fn leaf_holds_number(value: &Value, today: Date) -> bool {
    match value {
        Value::String(s) => contains_personnummer(s, today),
        Value::Number(n) => contains_personnummer(&n.to_string(), today),
        _ => false,
    }
}

/// Withholds every forwarded string that holds a number (module docs).
/// Numbers are judged on `today`, the gateway clock's date. Returns
/// whether anything was withheld.
pub fn withhold_numbers(schema: &MessageSchema, filtered: &mut Filtered, today: Date) -> bool {
    let Some(object) = filtered.payload.as_object_mut() else {
        return false;
    };
    let mut withheld = Vec::new();
    let names: Vec<String> = object.keys().cloned().collect();
    for name in names {
        let pointer = field_pointer(&name);
        if schema.field(&pointer).is_some_and(|f| f.identifier) {
            continue;
        }
        let Some(value) = object.get_mut(&name) else {
            continue;
        };
        if leaf_holds_number(value, today) || contains_personnummer(&name, today) {
            object.remove(&name);
            filtered.forwarded.retain(|p| p != &pointer);
            withheld.push(pointer);
        } else {
            scrub(value, &pointer, &mut withheld, today);
        }
    }
    if withheld.is_empty() {
        return false;
    }
    filtered.withheld.extend(withheld);
    filtered.withheld.sort();
    filtered.withheld.dedup();
    true
}

/// Removes offending strings below `value` (itself kept), listing their pointers.
fn scrub(value: &mut Value, pointer: &str, withheld: &mut Vec<String>, today: Date) {
    match value {
        Value::Object(map) => scrub_object(map, pointer, withheld, today),
        Value::Array(items) => {
            let old = std::mem::take(items);
            for (i, mut item) in old.into_iter().enumerate() {
                let child = format!("{pointer}/{i}");
                if leaf_holds_number(&item, today) {
                    withheld.push(child);
                    continue;
                }
                scrub(&mut item, &child, withheld, today);
                items.push(item);
            }
        }
        _ => {}
    }
}

fn scrub_object(
    map: &mut Map<String, Value>,
    pointer: &str,
    withheld: &mut Vec<String>,
    today: Date,
) {
    let names: Vec<String> = map.keys().cloned().collect();
    for name in names {
        let child = format!("{pointer}{}", field_pointer(&name));
        let offending = contains_personnummer(&name, today)
            || map.get(&name).is_some_and(|v| leaf_holds_number(v, today));
        if offending {
            map.remove(&name);
            withheld.push(child);
        } else if let Some(v) = map.get_mut(&name) {
            scrub(v, &child, withheld, today);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    /// The date the tests judge numbers on (DOMAIN §7: mid-2026).
    const TODAY: Date = date!(2026 - 06 - 15);

    #[test]
    fn every_form_is_found_anywhere_in_a_string() {
        for form in [
            "200203149828",
            "20020314-9828",
            "0203149828",
            "020314-9828",
            "20020314+9828",
            "020314+9828",
        ] {
            for text in [
                form.to_owned(),
                format!("Mål för {form}."),
                format!("x{form}y"),
                format!("9{form}"),
                format!("åäö{form}7"),
            ] {
                assert!(contains_personnummer(&text, TODAY), "{text}");
            }
        }
        // A samordningsnummer (day + 60).
        assert!(contains_personnummer("id 701063-2391", TODAY));
    }

    /// Review finding: a JSON number (not a string) holding a 10 or 12
    /// digit personnummer passed the scan on pseudonymise routes.
    #[test]
    fn json_numbers_holding_a_personnummer_are_found() {
        assert!(leaf_holds_number(
            &serde_json::json!(200203149828_u64),
            TODAY
        ));
        assert!(leaf_holds_number(&serde_json::json!(7010632391_u64), TODAY));
        assert!(!leaf_holds_number(&serde_json::json!(42), TODAY));
    }

    /// A valid personnummer (12 digits) from a date and a serial.
    fn valid_number(year: i32, month: u8, day: u8, serial: u16, samordning: bool) -> String {
        let day = if samordning { day + 60 } else { day };
        let nine = format!("{:02}{month:02}{day:02}{serial:03}", year % 100);
        let sum: u32 = nine
            .bytes()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
                d / 10 + d % 10
            })
            .sum();
        format!("{}{nine}{}", year / 100, (10 - sum % 10) % 10)
    }

    /// The six §3 spellings of a canonical number.
    fn forms(c: &str) -> [String; 6] {
        let (long_date, tail) = c.split_at(8);
        let short_date = &long_date[2..];
        [
            c.to_owned(),
            format!("{long_date}-{tail}"),
            format!("{long_date}+{tail}"),
            format!("{short_date}{tail}"),
            format!("{short_date}-{tail}"),
            format!("{short_date}+{tail}"),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just(' '),
                Just('-'),
                Just('ö'),
                proptest::char::range('0', '9')
            ],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn tree() -> impl Strategy<Value = Value> {
        text()
            .prop_map(Value::String)
            .prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
    }

    /// Plants `number` into the `k`-th string of `v` (counting in order).
    fn plant(v: &mut Value, k: &mut usize, number: &str, at: usize) -> bool {
        match v {
            Value::String(s) => {
                if *k == 0 {
                    let cut = s
                        .char_indices()
                        .nth(at % (s.chars().count() + 1))
                        .map_or(s.len(), |(i, _)| i);
                    s.insert_str(cut, number);
                    return true;
                }
                *k -= 1;
                false
            }
            Value::Array(a) => a.iter_mut().any(|x| plant(x, k, number, at)),
            Value::Object(m) => m.values_mut().any(|x| plant(x, k, number, at)),
            _ => false,
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// DESIGN §10: for random payloads with numbers planted in random
        /// string fields, the filter of a pseudonymise route (followed by
        /// this module) lets no planted number through, in any form.
        #[test]
        fn planted_numbers_never_reach_a_pseudonymise_recipient(
            fields in proptest::collection::btree_map("[a-z]{1,8}", tree(), 1..6),
            plants in proptest::collection::vec(
                (1930i32..2010, 1u8..13, 1u8..29, 1u16..1000, any::<bool>(), 0usize..6, 0usize..40, 0usize..20),
                1..4,
            ),
        ) {
            let registry = crate::schema::SchemaRegistry::builtin().unwrap();
            let schema = registry.get("rehabilitation-plan").unwrap();
            let mut payload = Value::Object(fields.into_iter().collect());
            let mut planted = Vec::new();
            for (y, m, d, serial, samordning, form, target, at) in plants {
                let c = valid_number(y, m, d, serial, samordning);
                let spelled = forms(&c)[form].clone();
                let mut k = target;
                let total = { let mut n = 0; count_strings(&payload, &mut n); n };
                if total == 0 { continue; }
                k %= total;
                prop_assert!(plant(&mut payload, &mut k, &spelled, at));
                planted.push(c);
            }
            let keys: Vec<String> = payload.as_object().unwrap().keys().map(|k| format!("/{k}")).collect();
            let mut filtered = Filtered { payload, forwarded: keys, withheld: Vec::new() };
            let any = withhold_numbers(schema, &mut filtered, TODAY);
            prop_assert!(any || planted.is_empty());
            let out = filtered.payload.to_string();
            for c in &planted {
                for f in forms(c) {
                    prop_assert!(!out.contains(&f), "{} reached the recipient", f);
                }
            }
            // Whatever is left holds no number at all.
            let mut strings = Vec::new();
            collect_strings(&filtered.payload, &mut strings);
            prop_assert!(strings.iter().all(|s| !contains_personnummer(s, TODAY)));
        }
    }

    fn count_strings(v: &Value, n: &mut usize) {
        match v {
            Value::String(_) => *n += 1,
            Value::Array(a) => a.iter().for_each(|x| count_strings(x, n)),
            Value::Object(m) => m.values().for_each(|x| count_strings(x, n)),
            _ => {}
        }
    }

    fn collect_strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                out.push(k.clone());
                collect_strings(x, out)
            }),
            _ => {}
        }
    }

    #[test]
    fn other_numbers_pass() {
        for text in [
            "",
            "Start studies in autumn 2026.",
            "2025-10-20",
            "20020314-9827",
            "phone 0480-123 45",
            "ref 000000-0000",
            "2002031498",
        ] {
            assert!(!contains_personnummer(text, TODAY), "{text}");
        }
    }
}
