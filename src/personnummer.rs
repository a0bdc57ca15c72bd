//! TEMPORARY stand-in for the personnummer module (written on another
//! branch): only the `parse` signature that `policy` needs. The real module
//! replaces this file at merge.

use std::fmt;

/// A parsed personnummer or samordningsnummer (stand-in).
#[derive(Clone, PartialEq, Eq)]
pub struct Personnummer(String);

/// Why a string is not a personnummer (stand-in).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersonnummerError {
    /// Wrong shape, serial or check digit.
    #[error("not a valid personnummer or samordningsnummer")]
    Invalid,
}

impl Personnummer {
    /// Parses the accepted forms into the canonical 12 digits; checks only
    /// the shape and the Luhn digit (the real module checks more).
    pub fn parse(input: &str) -> Result<Personnummer, PersonnummerError> {
        let digits: String = input.chars().filter(|c| *c != '-' && *c != '+').collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(PersonnummerError::Invalid);
        }
        let canonical = match digits.len() {
            12 => digits,
            10 => format!("19{digits}"),
            _ => return Err(PersonnummerError::Invalid),
        };
        let tail = canonical.get(2..).ok_or(PersonnummerError::Invalid)?;
        let sum: u32 = tail
            .chars()
            .filter_map(|c| c.to_digit(10))
            .enumerate()
            .map(|(i, d)| {
                let v = if i % 2 == 0 { d * 2 } else { d };
                v / 10 + v % 10
            })
            .sum();
        if sum % 10 != 0 {
            return Err(PersonnummerError::Invalid);
        }
        Ok(Personnummer(canonical))
    }
}

impl fmt::Debug for Personnummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Personnummer(***)")
    }
}
