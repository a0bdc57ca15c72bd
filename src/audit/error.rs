//! Why an auditor's (or a disclosure) query is refused: its parameters, the
//! personnummer searched for, a proof beyond the log. It becomes
//! problem+json in [`crate::error`]; no text holds a parameter's value.

use super::query::MAX_LIMIT;
use crate::subject::personnummer::PersonnummerError;

/// A refused query of the audit API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditRequestError {
    /// The query string does not parse into the endpoint's parameters (400).
    #[error("the query string has an unknown, repeated or malformed parameter")]
    QueryString,
    /// The console's filter form has a field the API does not (400).
    #[error("unknown filter")]
    UnknownFilter,
    /// A number parameter (its name) beyond `u64` (400).
    #[error("`{0}` is out of range")]
    OutOfRange(&'static str),
    /// A number parameter (its name) that is not decimal digits (400).
    #[error("`{0}` must be a non-negative integer")]
    NotANumber(&'static str),
    /// A required parameter (its name) is missing (400).
    #[error("`{0}` is required")]
    Required(&'static str),
    /// A time parameter (its name) that is not RFC 3339 (400).
    #[error("`{0}` must be an RFC 3339 time")]
    NotATime(&'static str),
    /// A filter value (its name) that is not id-like (400).
    #[error("`{0}` is not a valid identifier")]
    NotAnIdentifier(&'static str),
    /// `limit` outside 1 to [`MAX_LIMIT`] (400).
    #[error("`limit` must be between 1 and {MAX_LIMIT}")]
    Limit,
    /// `cursor` was not made by this API (400).
    #[error("`cursor` is not a cursor of this API")]
    Cursor,
    /// `subject` is not an audit pseudonym (400).
    #[error("`subject` must be an audit pseudonym (ps1_...)")]
    SubjectNotPseudonym,
    /// A subject search's `reason` is too long or could hold an identifier (400).
    #[error("`reason` must be at most 200 characters and hold no identifier")]
    Reason,
    /// An inclusion proof asked with a consistency proof's parameters (400).
    #[error("an inclusion proof takes `seq` and `tree_size`")]
    InclusionParams,
    /// A consistency proof asked with an inclusion proof's parameters (400).
    #[error("a consistency proof takes `first` and `second`")]
    ConsistencyParams,
    /// `seq` 0 (400).
    #[error("`seq` starts at 1")]
    SeqZero,
    /// `first` > `second` (400).
    #[error("`first` must not be larger than `second`")]
    FirstAfterSecond,
    /// An export's `from_seq` > `to_seq` (400).
    #[error("`from_seq` must not be larger than `to_seq`")]
    FromAfterTo,
    /// The personnummer searched for is not valid (422); never echoed.
    #[error("`personnummer`: {0}")]
    Personnummer(PersonnummerError),
    /// An inclusion proof for a record the tree (or the log) does not have (404).
    #[error("no record {seq} in a tree of size {size} (the log has {current} records)")]
    NoRecord {
        /// The record asked for.
        seq: u64,
        /// The tree size asked for.
        size: u64,
        /// The log's size now.
        current: u64,
    },
    /// A consistency proof to a tree larger than the log (404).
    #[error("no tree of size {second} (the log has {current} records)")]
    NoTree {
        /// The tree size asked for.
        second: u64,
        /// The log's size now.
        current: u64,
    },
}
