//! Consent (DESIGN §2): verification of signed consent tokens, the stored
//! model and the consent check, the HTTP API, and the signing CLI.

pub mod api;
pub mod cache;
pub mod cli;
pub mod lifecycle;
pub mod model;
pub mod notices;
pub mod receipt;
pub mod token;
pub mod verify;

/// Why a consent request is refused beyond its token ([`verify`]) and the
/// consent check ([`model::Denial`]); problem+json in [`crate::error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsentError {
    /// The token's `jti` is already recorded (409 `consent_replayed`).
    #[error("a consent with this id (jti) is already recorded")]
    Replayed,
    /// No consent with this id (404).
    #[error("no consent with this id")]
    NotFound,
    /// A cached decision's guard was refused: the subject's consents moved
    /// while the exchange was decided (503 `unavailable`).
    #[error(
        "the participant's consent changed while the exchange was decided; nothing was sent, try again"
    )]
    Changed,
}
