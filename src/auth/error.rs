//! The refusals of authentication and role checks, each mapped to
//! problem+json in [`crate::error`] (401 `unauthenticated`/`invalid_token`,
//! 403 `forbidden_role`). A leaf module: the error mapping imports it
//! without importing the authentication middleware (and its state).

use super::jwt;
use crate::party::{PartyId, Role};

/// Why a caller is not let in (DESIGN §1); it becomes problem+json in
/// [`crate::error`] (401 `unauthenticated` / `invalid_token`, 403
/// `forbidden_role`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No client certificate reached the request (401).
    #[error("a client certificate is required")]
    NoCertificate,
    /// The certificate is pinned to no party or user (401).
    #[error("the client certificate is not pinned to any party")]
    NotPinned,
    /// The party's user token was refused (401 `invalid_token`).
    #[error(transparent)]
    Token(#[from] jwt::JwtError),
    /// The auditor role acts only for a named user (401 `invalid_token`).
    #[error("the auditor role requires a user token")]
    AuditorWithoutUser,
    /// The party lacks the one role required (403).
    #[error("party `{party}` does not have the `{}` role", .role.as_str())]
    MissingRole {
        /// The caller's party.
        party: PartyId,
        /// The role required.
        role: Role,
    },
    /// The party has none of the roles allowed (403).
    #[error("party `{party}` needs one of the roles {}", role_names(.roles))]
    NoneOfRoles {
        /// The caller's party.
        party: PartyId,
        /// The roles allowed.
        roles: Vec<Role>,
    },
}

fn role_names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
