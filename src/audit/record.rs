//! One audit record (DESIGN §6, §9) and its canonical leaf bytes.
//!
//! The leaf is the RFC 8785 (JCS) canonical JSON of the record: keys sorted,
//! no whitespace, every field present (absent values are `null`). The record
//! carries no personal data in clear: the subject is its `audit`-domain
//! pseudonym, payloads are represented by their SHA-256.

use serde::{Deserialize, Serialize};

use crate::subject::pseudonym::{Audit, Pseudonym};

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
    /// A revocation notice reached a party that had received data under
    /// the consent (DESIGN §13).
    pub const REVOCATION_NOTIFIED: &str = "revocation-notified";
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

/// Longest string (in characters) an audit record field holds.
pub const MAX_STRING_CHARS: usize = 256;

/// An audit record as stored, returned by the API and hashed into the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// See [`action`].
    pub action: String,
    /// The authenticated party that acted.
    pub actor_party: Option<String>,
    /// The human user from the party's JWT.
    pub actor_user: Option<String>,
    /// The consent the decision relied on.
    pub consent_id: Option<String>,
    /// See [`decision`].
    pub decision: String,
    /// The exchange concerned.
    pub exchange_id: Option<String>,
    /// Forwarded field paths.
    pub forwarded: Vec<String>,
    /// Sending party of an exchange.
    pub from: Option<String>,
    /// SHA-256 (hex) of the payload as received.
    pub payload_sha256: Option<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// Problem code or short reason.
    pub reason: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Position in the log, from 1; the Merkle leaf index is `seq - 1`.
    pub seq: u64,
    /// The subject's `audit`-domain pseudonym.
    pub subject: Option<String>,
    /// RFC 3339 UTC with microseconds.
    pub time: String,
    /// Receiving party of an exchange.
    pub to: Option<String>,
    /// Message type.
    #[serde(rename = "type")]
    pub msg_type: Option<String>,
    /// Withheld field paths.
    pub withheld: Vec<String>,
}

impl AuditRecord {
    /// Sets the subject: only the `audit`-domain form may be recorded.
    pub fn set_subject(&mut self, subject: Option<&Pseudonym<Audit>>) {
        self.subject = subject.map(|ps| ps.as_str().to_owned());
    }

    /// The canonical (RFC 8785, JCS) leaf bytes.
    ///
    /// The fields are declared in sorted key order, and the record holds only
    /// strings, an unsigned integer, string arrays and nulls; for those,
    /// serde_json's compact output is exactly JCS (same key order, same
    /// escapes). That is ten times faster than a general canonicalizer on
    /// the hot path; `leaf_bytes_are_jcs` checks it against one.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, integers, arrays and nulls cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record with every string cut to [`MAX_STRING_CHARS`] characters
    /// (DESIGN §10 "Client-chosen strings"): no field of the permanent log
    /// can hold a whole megabyte, or a whole text, that someone sent.
    pub fn bounded(mut self) -> AuditRecord {
        let cut = |s: &mut String| {
            if let Some((i, _)) = s.char_indices().nth(MAX_STRING_CHARS) {
                s.truncate(i);
            }
        };
        for s in [&mut self.action, &mut self.decision, &mut self.time] {
            cut(s);
        }
        for s in [
            &mut self.actor_party,
            &mut self.actor_user,
            &mut self.consent_id,
            &mut self.exchange_id,
            &mut self.from,
            &mut self.payload_sha256,
            &mut self.purpose,
            &mut self.reason,
            &mut self.request_id,
            &mut self.subject,
            &mut self.to,
            &mut self.msg_type,
        ]
        .into_iter()
        .flatten()
        {
            cut(s);
        }
        for s in self.forwarded.iter_mut().chain(self.withheld.iter_mut()) {
            cut(s);
        }
        self
    }

    /// Parses leaf bytes back into a record.
    pub fn from_leaf(leaf: &[u8]) -> Result<AuditRecord, serde_json::Error> {
        serde_json::from_slice(leaf)
    }
}

/// What a caller hands to [`super::log::AuditLog::append`]: a record without
/// `seq` and `time`, which the log assigns when the batch commits.
pub type AuditEntry = AuditRecord;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Control characters, quotes, backslashes, DEL and non-ASCII.
        proptest::collection::vec(
            prop_oneof![
                any::<char>(),
                prop::char::range('\u{0}', '\u{1f}'),
                Just('"'),
                Just('\\'),
                Just('\u{7f}'),
                Just('ö'),
                Just('😀'),
            ],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    #[test]
    fn bounded_cuts_every_string_at_256_characters() {
        let long = "ö".repeat(1000);
        let r = AuditRecord {
            action: long.clone(),
            reason: Some(long.clone()),
            request_id: Some("short".into()),
            withheld: vec![long.clone()],
            ..AuditRecord::default()
        }
        .bounded();
        assert_eq!(r.action.chars().count(), MAX_STRING_CHARS);
        assert_eq!(r.reason.as_deref().map(|s| s.chars().count()), Some(256));
        assert_eq!(r.withheld[0].chars().count(), 256);
        assert_eq!(r.request_id.as_deref(), Some("short"));
    }

    proptest! {
        #[test]
        fn leaf_bytes_are_jcs(
            // JCS numbers are IEEE doubles: integers are exact up to 2^53,
            // far beyond any log's size.
            seq in 0u64..(1u64 << 53),
            a in text(),
            b in proptest::option::of(text()),
            list in proptest::collection::vec(text(), 0..4),
        ) {
            let r = AuditRecord {
                seq,
                time: a.clone(),
                action: a.clone(),
                actor_user: b.clone(),
                msg_type: b.clone(),
                reason: b,
                forwarded: list.clone(),
                withheld: list,
                decision: a,
                ..AuditRecord::default()
            };
            let jcs = serde_json_canonicalizer::to_vec(&r).unwrap();
            prop_assert_eq!(r.leaf_bytes(), jcs);
        }
    }
}
