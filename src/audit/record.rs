//! One audit record (DESIGN §6, §9) and its canonical leaf bytes.
//!
//! The leaf is the RFC 8785 (JCS) canonical JSON of the record: keys sorted,
//! no whitespace, every field present (absent values are `null`). The record
//! carries no personal data in clear: the subject is its `audit`-domain
//! pseudonym, payloads are represented by their SHA-256.

use serde::{Deserialize, Serialize};

/// Record actions (DESIGN §9).
pub mod action {
    /// An exchange passed every check and its message is about to leave.
    pub const EXCHANGE_FORWARDED: &str = "exchange-forwarded";
    /// An exchange was refused.
    pub const EXCHANGE_DENIED: &str = "exchange-denied";
    /// The recipient acknowledged the delivery.
    pub const EXCHANGE_DELIVERED: &str = "exchange-delivered";
    /// Delivery failed (sync error, or async attempts exhausted/expired).
    pub const EXCHANGE_FAILED: &str = "exchange-failed";
    /// A recipient's reply was passed back to the sender.
    pub const REPLY_FORWARDED: &str = "reply-forwarded";
    /// A recipient's reply was withheld (no reverse route, invalid).
    pub const REPLY_WITHHELD: &str = "reply-withheld";
    /// A consent was recorded.
    pub const CONSENT_RECORDED: &str = "consent-recorded";
    /// A consent was withdrawn.
    pub const CONSENT_REVOKED: &str = "consent-revoked";
    /// A pseudonym was resolved to the personnummer through the vault.
    pub const REIDENTIFIED: &str = "reidentified";
    /// An auditor read the log.
    pub const AUDIT_QUERY: &str = "audit-query";
    /// A participant's register extract was produced.
    pub const DISCLOSURE: &str = "disclosure";
}

/// Decisions recorded with an action.
pub mod decision {
    /// Allowed / done.
    pub const PERMIT: &str = "permit";
    /// Refused.
    pub const DENY: &str = "deny";
    /// Delivered to the recipient.
    pub const DELIVERED: &str = "delivered";
    /// Delivery failed.
    pub const FAILED: &str = "failed";
    /// Async delivery given up after `expire_after`.
    pub const EXPIRED: &str = "expired";
}

/// An audit record as stored, returned by the API and hashed into the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log, from 1; the Merkle leaf index is `seq - 1`.
    pub seq: u64,
    /// RFC 3339 UTC with microseconds.
    pub time: String,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// See [`action`].
    pub action: String,
    /// The authenticated party that acted.
    pub actor_party: Option<String>,
    /// The human user from the party's JWT.
    pub actor_user: Option<String>,
    /// Sending party of an exchange.
    pub from: Option<String>,
    /// Receiving party of an exchange.
    pub to: Option<String>,
    /// Message type.
    #[serde(rename = "type")]
    pub msg_type: Option<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// The subject's `audit`-domain pseudonym.
    pub subject: Option<String>,
    /// The consent the decision relied on.
    pub consent_id: Option<String>,
    /// The exchange concerned.
    pub exchange_id: Option<String>,
    /// Forwarded field paths.
    pub forwarded: Vec<String>,
    /// Withheld field paths.
    pub withheld: Vec<String>,
    /// See [`decision`].
    pub decision: String,
    /// Problem code or short reason.
    pub reason: Option<String>,
    /// SHA-256 (hex) of the payload as received.
    pub payload_sha256: Option<String>,
}

impl AuditRecord {
    /// The canonical (JCS) leaf bytes.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, integers, arrays and nulls cannot fail.
        serde_json_canonicalizer::to_vec(self).unwrap_or_default()
    }

    /// Parses leaf bytes back into a record.
    pub fn from_leaf(leaf: &[u8]) -> Result<AuditRecord, serde_json::Error> {
        serde_json::from_slice(leaf)
    }
}

/// What a caller hands to [`super::log::AuditLog::append`]: a record without
/// `seq` and `time`, which the log assigns when the batch commits.
pub type AuditEntry = AuditRecord;
