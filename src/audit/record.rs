//! One audit record (DESIGN §6, §9) and its canonical leaf bytes.
//!
//! The leaf is the RFC 8785 (JCS) canonical JSON of the record: keys sorted,
//! no whitespace, every field present (absent values are `null`). The record
//! carries no personal data in clear: the subject is its `audit`-domain
//! pseudonym, payloads are represented by their SHA-256.

use serde::{Deserialize, Serialize};

use crate::subject::pseudonym::{Audit, Pseudonym};

/// What a record says happened (DESIGN §9). Serialised as the kebab-case
/// names of §9 (`exchange-forwarded`, …), in the leaf and in the `action`
/// column alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// An exchange passed every check and its message is about to leave.
    ExchangeForwarded,
    /// An exchange was refused.
    ExchangeDenied,
    /// The recipient acknowledged the delivery.
    ExchangeDelivered,
    /// Delivery failed (sync error, or async attempts exhausted/expired).
    ExchangeFailed,
    /// A recipient's reply was passed back to the sender.
    ReplyForwarded,
    /// A recipient's reply was withheld (no reverse route, invalid).
    ReplyWithheld,
    /// A consent was recorded.
    ConsentRecorded,
    /// A consent was withdrawn.
    ConsentRevoked,
    /// A pseudonym was resolved to the personnummer through the vault.
    Reidentified,
    /// An auditor read the log.
    AuditQuery,
    /// A participant's register extract was produced.
    Disclosure,
    /// A revocation notice reached a party that had received data under
    /// the consent (DESIGN §13).
    RevocationNotified,
}

impl Action {
    /// Every action, in the order of DESIGN §9.
    pub const ALL: [Action; 12] = [
        Action::ExchangeForwarded,
        Action::ExchangeDenied,
        Action::ExchangeDelivered,
        Action::ExchangeFailed,
        Action::ReplyForwarded,
        Action::ReplyWithheld,
        Action::ConsentRecorded,
        Action::ConsentRevoked,
        Action::Reidentified,
        Action::AuditQuery,
        Action::Disclosure,
        Action::RevocationNotified,
    ];

    /// The name as in the leaf and the `action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ExchangeForwarded => "exchange-forwarded",
            Action::ExchangeDenied => "exchange-denied",
            Action::ExchangeDelivered => "exchange-delivered",
            Action::ExchangeFailed => "exchange-failed",
            Action::ReplyForwarded => "reply-forwarded",
            Action::ReplyWithheld => "reply-withheld",
            Action::ConsentRecorded => "consent-recorded",
            Action::ConsentRevoked => "consent-revoked",
            Action::Reidentified => "reidentified",
            Action::AuditQuery => "audit-query",
            Action::Disclosure => "disclosure",
            Action::RevocationNotified => "revocation-notified",
        }
    }
}

/// How a record's action was decided (DESIGN §9), serialised lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allowed / done.
    Permit,
    /// Refused.
    Deny,
    /// Delivered to the recipient.
    Delivered,
    /// Delivery failed.
    Failed,
    /// Async delivery given up after `expire_after`.
    Expired,
}

impl Decision {
    /// Every decision.
    pub const ALL: [Decision; 5] = [
        Decision::Permit,
        Decision::Deny,
        Decision::Delivered,
        Decision::Failed,
        Decision::Expired,
    ];

    /// The name as in the leaf and the `decision` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Permit => "permit",
            Decision::Deny => "deny",
            Decision::Delivered => "delivered",
            Decision::Failed => "failed",
            Decision::Expired => "expired",
        }
    }
}

/// A name that is no [`Action`] or no [`Decision`] (the text is not kept:
/// it could be anything a client or a damaged log holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a known audit action or decision")]
pub struct UnknownName;

/// `Display` and `FromStr` of a name enum: exactly its `as_str` names.
macro_rules! named {
    ($t:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                $t::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or(UnknownName)
            }
        }
    };
}

named!(Action);
named!(Decision);

/// Longest string (in characters) an audit record field holds.
pub const MAX_STRING_CHARS: usize = 256;

/// An audit record as stored, returned by the API and hashed into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// What happened.
    pub action: Action,
    /// The authenticated party that acted.
    pub actor_party: Option<String>,
    /// The human user from the party's JWT.
    pub actor_user: Option<String>,
    /// The consent the decision relied on.
    pub consent_id: Option<String>,
    /// How it was decided.
    pub decision: Decision,
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

    /// A record of `action` and `decision` with every other field empty
    /// (`seq` and `time` are the log's to assign).
    pub fn new(action: Action, decision: Decision) -> AuditRecord {
        AuditRecord {
            action,
            actor_party: None,
            actor_user: None,
            consent_id: None,
            decision,
            exchange_id: None,
            forwarded: Vec::new(),
            from: None,
            payload_sha256: None,
            purpose: None,
            reason: None,
            request_id: None,
            seq: 0,
            subject: None,
            time: String::new(),
            to: None,
            msg_type: None,
            withheld: Vec::new(),
        }
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
        cut(&mut self.time);
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
            time: long.clone(),
            reason: Some(long.clone()),
            request_id: Some("short".into()),
            withheld: vec![long.clone()],
            ..AuditRecord::new(Action::AuditQuery, Decision::Permit)
        }
        .bounded();
        assert_eq!(r.time.chars().count(), MAX_STRING_CHARS);
        assert_eq!(r.reason.as_deref().map(|s| s.chars().count()), Some(256));
        assert_eq!(r.withheld[0].chars().count(), 256);
        assert_eq!(r.request_id.as_deref(), Some("short"));
    }

    /// Each of `all` serialises, deserialises, displays and parses as its
    /// name in `names`, in order.
    fn keeps_names<T>(all: &[T], names: &[&str])
    where
        T: Copy
            + std::fmt::Debug
            + PartialEq
            + Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Display
            + std::str::FromStr<Err = UnknownName>,
    {
        assert_eq!(all.len(), names.len());
        for (v, name) in all.iter().copied().zip(names) {
            let quoted = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&v).unwrap(), quoted);
            assert_eq!(serde_json::from_str::<T>(&quoted).unwrap(), v);
            assert_eq!(v.to_string(), *name);
            assert_eq!(name.parse::<T>(), Ok(v));
        }
    }

    /// The names of DESIGN §9, as leaves and columns have always held them:
    /// each variant serialises, displays and parses as exactly its string.
    #[test]
    fn actions_and_decisions_keep_their_names() {
        let actions = [
            "exchange-forwarded",
            "exchange-denied",
            "exchange-delivered",
            "exchange-failed",
            "reply-forwarded",
            "reply-withheld",
            "consent-recorded",
            "consent-revoked",
            "reidentified",
            "audit-query",
            "disclosure",
            "revocation-notified",
        ];
        keeps_names(&Action::ALL, &actions);
        keeps_names(
            &Decision::ALL,
            &["permit", "deny", "delivered", "failed", "expired"],
        );
        assert_eq!("Permit".parse::<Decision>(), Err(UnknownName));
        assert_eq!("exchange_forwarded".parse::<Action>(), Err(UnknownName));
    }

    /// A leaf naming an action this build does not know is an error, not a
    /// panic (the verifier names the failure, see `audit::verify`).
    #[test]
    fn an_unknown_action_in_a_leaf_is_an_error() {
        let mut leaf = AuditRecord::new(Action::Disclosure, Decision::Permit).leaf_bytes();
        let text = String::from_utf8(leaf.clone()).unwrap();
        leaf = text
            .replace("\"disclosure\"", "\"teleported\"")
            .into_bytes();
        assert!(AuditRecord::from_leaf(&leaf).is_err());
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
            action in proptest::sample::select(Action::ALL.to_vec()),
            decision in proptest::sample::select(Decision::ALL.to_vec()),
        ) {
            let r = AuditRecord {
                seq,
                time: a.clone(),
                actor_user: b.clone(),
                msg_type: b.clone(),
                reason: b,
                forwarded: list.clone(),
                withheld: list,
                purpose: Some(a),
                ..AuditRecord::new(action, decision)
            };
            let jcs = serde_json_canonicalizer::to_vec(&r).unwrap();
            prop_assert_eq!(r.leaf_bytes(), jcs);
        }
    }
}
