//! Who is calling: the typed [`Principal`] (party, roles, optional user),
//! built from the connection's pinned client certificate and, where the party
//! has a `jwt_issuer`, its user token (DESIGN §1).

pub mod error;
pub mod jwt;

pub use error::AuthError;

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::party::{PartyId, Role};
use crate::state::{AppState, Live};

/// Inserted into every request by the TLS accept loop: the SHA-256 of the
/// peer certificate's SPKI (the handshake already verified the chain).
#[derive(Debug, Clone, Copy)]
pub struct PeerCertificate(pub Option<[u8; 32]>);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The party the certificate is pinned to.
    pub party: PartyId,
    /// The party's roles.
    pub roles: BTreeSet<Role>,
    /// The human user from the party's JWT, when the party has an issuer.
    pub user: Option<String>,
}

impl Principal {
    /// 403 `forbidden_role` unless the party has `role`; the auditor role also
    /// needs a named user.
    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if !self.roles.contains(&role) {
            return Err(AuthError::MissingRole {
                party: self.party.clone(),
                role,
            });
        }
        if role == Role::Auditor && self.user.is_none() {
            return Err(AuthError::AuditorWithoutUser);
        }
        Ok(())
    }

    /// 403 unless the party has at least one of `roles` (an auditor also
    /// needs a named user).
    pub fn require_any(&self, roles: &[Role]) -> Result<(), AuthError> {
        let held: Vec<Role> = roles
            .iter()
            .copied()
            .filter(|r| self.roles.contains(r))
            .collect();
        if held.is_empty() {
            return Err(AuthError::NoneOfRoles {
                party: self.party.clone(),
                roles: roles.to_vec(),
            });
        }
        if held.iter().all(|r| *r == Role::Auditor) && self.user.is_none() {
            return Err(AuthError::AuditorWithoutUser);
        }
        Ok(())
    }

    /// Whether the party has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let principal = authenticate(parts, state.live(), state.clock.now().date())?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// Resolves the principal of a request (also used by the rate limiter) on
/// one configuration snapshot: its pins, users and user-token verifiers.
/// `today` is the gateway clock's date (a user token's `sub` must not be a
/// personnummer on that date).
pub fn authenticate(parts: &Parts, live: &Live, today: time::Date) -> Result<Principal, AuthError> {
    let pin = parts
        .extensions
        .get::<PeerCertificate>()
        .and_then(|p| p.0)
        .ok_or(AuthError::NoCertificate)?;
    // A personal user certificate (DESIGN §1, §11): (party, the user's
    // roles, the user), no JWT needed.
    if let Some(u) = live.user_by_pin(&pin) {
        return Ok(Principal {
            party: u.party.clone(),
            roles: u.roles.clone(),
            user: Some(u.id.clone()),
        });
    }
    let party = live.party_by_pin(&pin).ok_or(AuthError::NotPinned)?;
    let user = match live.verifiers.get(&party.id) {
        None => None,
        Some(verifier) => {
            let token = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            let result = match token {
                None => Err(jwt::JwtError::Missing),
                Some(t) => verifier.verify(t, today),
            };
            match result {
                Ok(user) => Some(user),
                Err(e) => {
                    tracing::info!(party.id = %party.id, reason = %e, "user token refused");
                    return Err(e.into());
                }
            }
        }
    };
    Ok(Principal {
        party: party.id.clone(),
        roles: party.roles.clone(),
        user,
    })
}
