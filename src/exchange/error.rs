//! Why an exchange is refused (DESIGN §5): the exchange's own error, with
//! ids and field pointers only, never a value from the payload. It becomes
//! problem+json in one place, [`crate::error`].

use crate::ids::ExchangeId;
use crate::subject::personnummer::PersonnummerError;

/// A refusal of one of the exchange's steps (or of its idempotency key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The envelope's `subject` is not a valid personnummer (422).
    #[error("`subject`: {0}")]
    InvalidSubject(PersonnummerError),
    /// `to` names no party; the text is already quoted or `(not shown)` (422).
    #[error("`to`: unknown party {0}")]
    UnknownParty(String),
    /// `type` names no message type; quoted like [`Self::UnknownParty`] (422).
    #[error("`type`: unknown message type {0}")]
    UnknownType(String),
    /// An identifier field (its pointer) names a person but the envelope has
    /// no `subject` (400).
    #[error("`subject` is required when the payload names a person (`{0}`)")]
    SubjectRequiredBy(String),
    /// An identifier field (its pointer) names someone other than the
    /// envelope's `subject` (422).
    #[error("`{0}` names another person than the envelope's `subject`")]
    AnotherPerson(String),
    /// No route allows the message; `purpose` is already quoted (403).
    #[error("no route allows `{from}` to send `{msg_type}` to `{to}` for {purpose}")]
    NoRoute {
        /// The sender.
        from: String,
        /// The recipient.
        to: String,
        /// The message type.
        msg_type: String,
        /// The purpose, quoted or `(not shown)`.
        purpose: String,
    },
    /// The route requires consent and the envelope has no `subject` (400).
    #[error("`subject` is required on this route")]
    SubjectRequired,
    /// `Idempotency-Key` is not 1 to 255 visible ASCII characters (400).
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    BadIdempotencyKey,
    /// The recipient did not accept a sync exchange (502).
    #[error(
        "the recipient did not accept the message ({error}); the exchange is recorded as failed"
    )]
    RecipientFailed {
        /// The delivery error (no payload values).
        error: String,
        /// The exchange, recorded as failed.
        exchange_id: ExchangeId,
    },
    /// The key's row vanished between the insert and the read (409).
    #[error("the idempotency key changed concurrently; retry")]
    IdempotencyRace,
    /// The key was used before with another body (409).
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyReused,
    /// The key's first request has not finished (409).
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInProgress,
    /// No exchange with this id that the caller may see (404).
    #[error("no such exchange")]
    NotFound,
    /// A configured recipient without an endpoint (a bug: 500).
    #[error("recipient without endpoint")]
    NoEndpoint,
}
