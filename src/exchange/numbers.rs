//! Numbers in text (DESIGN §10): on `pseudonymise` and `omit` routes a
//! forwarded string value, at any depth, that contains a personnummer or
//! samordningsnummer in any §3 form is withheld. Its pointer goes into
//! `withheld` and the audit record's `reason` is `identifier_in_text`.
//!
//! # Decisions
//!
//! - A number is anything [`Personnummer::parse`] accepts (date, serial and
//!   Luhn checked) in the forms `YYMMDDNNNC`, `YYMMDD-NNNC`, `YYMMDD+NNNC`,
//!   `YYYYMMDDNNNC`, `YYYYMMDD-NNNC` and `YYYYMMDD+NNNC`, starting at any
//!   digit of the string, also inside a longer run of digits: a sender
//!   cannot hide a number by gluing digits to it.
//! - A top-level string that holds a number is withheld as a whole field.
//!   Below the top level only the offending string (or object member whose
//!   name holds a number) is removed; its pointer, relative to the payload
//!   as sent, is listed in `withheld`, and the enclosing top-level field
//!   stays in `forwarded`. Removing an array element shifts the later
//!   elements in the recipient's copy.
//! - Identifier fields (`x-identifier`) are not scanned: they already carry
//!   the recipient's pseudonym, or were removed.

use serde_json::{Map, Value};

use crate::personnummer::Personnummer;
use crate::policy::Filtered;
use crate::schema::{field_pointer, MessageSchema};

/// The audit `reason` of an exchange that had a string withheld for a number.
pub const REASON: &str = "identifier_in_text";

/// Lengths of the §3 forms: 10 and 12 digits, with or without a separator.
const FORM_LENGTHS: [usize; 4] = [10, 11, 12, 13];

/// Whether `text` contains a personnummer or samordningsnummer in any §3 form.
pub fn contains_personnummer(text: &str) -> bool {
    text.bytes().enumerate().any(|(start, b)| {
        b.is_ascii_digit()
            && FORM_LENGTHS.iter().any(|len| {
                text.get(start..start + len)
                    .is_some_and(|candidate| Personnummer::parse(candidate).is_ok())
            })
    })
}

/// Withholds every forwarded string that holds a number (module docs).
/// Returns whether anything was withheld.
pub fn withhold_numbers(schema: &MessageSchema, filtered: &mut Filtered) -> bool {
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
        if value.as_str().is_some_and(contains_personnummer) || contains_personnummer(&name) {
            object.remove(&name);
            filtered.forwarded.retain(|p| p != &pointer);
            withheld.push(pointer);
        } else {
            scrub(value, &pointer, &mut withheld);
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
fn scrub(value: &mut Value, pointer: &str, withheld: &mut Vec<String>) {
    match value {
        Value::Object(map) => scrub_object(map, pointer, withheld),
        Value::Array(items) => {
            let old = std::mem::take(items);
            for (i, mut item) in old.into_iter().enumerate() {
                let child = format!("{pointer}/{i}");
                if item.as_str().is_some_and(contains_personnummer) {
                    withheld.push(child);
                    continue;
                }
                scrub(&mut item, &child, withheld);
                items.push(item);
            }
        }
        _ => {}
    }
}

fn scrub_object(map: &mut Map<String, Value>, pointer: &str, withheld: &mut Vec<String>) {
    let names: Vec<String> = map.keys().cloned().collect();
    for name in names {
        let child = format!("{pointer}{}", field_pointer(&name));
        let offending = contains_personnummer(&name)
            || map
                .get(&name)
                .and_then(Value::as_str)
                .is_some_and(contains_personnummer);
        if offending {
            map.remove(&name);
            withheld.push(child);
        } else if let Some(v) = map.get_mut(&name) {
            scrub(v, &child, withheld);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                assert!(contains_personnummer(&text), "{text}");
            }
        }
        // A samordningsnummer (day + 60).
        assert!(contains_personnummer("id 701063-2391"));
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
            assert!(!contains_personnummer(text), "{text}");
        }
    }
}
