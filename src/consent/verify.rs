//! Consent token verification (DESIGN §2, §9 "Consent token").
//!
//! Order of checks, each with its own problem code: the header's `alg` must
//! be EdDSA or ES256 (`consent_signature`); the key is chosen by (`iss`,
//! `kid`) among the configured issuers only (`unknown_issuer`); the issuer's
//! key type must match `alg` and the signature must verify
//! (`consent_signature`); only then are the claims read and validated
//! (`invalid_consent_claims`, `invalid_personnummer`).

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::lifecycle::GivenBy;
use crate::auth::jwt::PublicKeyFile;
use crate::config::Config;
use crate::error::quote_id;
use crate::schema::Category;
use crate::subject::personnummer::{Personnummer, PersonnummerError};

/// Clock skew accepted on `nbf`/`exp`.
const LEEWAY_SECS: i64 = 60;

/// How the participant gave consent.
pub const METHODS: &[&str] = &["bankid", "written", "oral-documented"];

/// A configured consent issuer key.
pub struct IssuerKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// The configured issuers, by (`iss`, `kid`).
pub struct ConsentVerifier {
    issuers: HashMap<(String, String), IssuerKey>,
    parties: BTreeSet<String>,
    purposes: BTreeSet<String>,
    max_lifetime_secs: i64,
}

/// A verified consent, ready to be stored.
pub struct VerifiedConsent {
    /// `jti`.
    pub id: uuid::Uuid,
    /// The participant.
    pub subject: Personnummer,
    /// `iss`.
    pub issuer: String,
    /// `kid`.
    pub key_id: String,
    /// Party ids.
    pub parties: Vec<String>,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Categories.
    pub categories: Vec<Category>,
    /// `method`.
    pub method: String,
    /// `recorded_by`.
    pub recorded_by: String,
    /// `nbf` (unix seconds).
    pub not_before: i64,
    /// `exp` (unix seconds).
    pub expires_at: i64,
    /// `given_by`: the representative who gave it (DESIGN §13).
    pub given_by: Option<GivenBy>,
    /// `protected_identity` (DESIGN §13).
    pub protected_identity: bool,
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

/// The consent claims of DESIGN §2, as `samgate consent sign` signs them
/// and as they are read here. Other claims a signer adds are ignored (JWTs
/// commonly carry extra registered or private claims); an absent optional
/// claim is not written.
#[derive(Serialize, Deserialize)]
pub struct ConsentClaims {
    /// Consent id (a UUID).
    pub jti: String,
    /// Issuer id.
    pub iss: String,
    /// Personnummer (canonical form when signed here).
    pub sub: String,
    /// Audience: `samgate`, or a list holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Issued at (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Valid from (unix seconds).
    pub nbf: i64,
    /// Valid until (unix seconds).
    pub exp: i64,
    /// Party ids.
    pub parties: Vec<String>,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Category names.
    pub categories: Vec<String>,
    /// One of [`METHODS`].
    pub method: String,
    /// The staff member.
    pub recorded_by: String,
    /// The representative who gave it (DESIGN §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_by: Option<GivenBy>,
    /// The protected-identity marking (DESIGN §13), written only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_identity: Option<bool>,
}

/// Why a consent token is refused, in the order of the checks (module
/// docs); it becomes problem+json in [`crate::error`]. No text holds a
/// claim's value except ids that pass [`quote_id`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsentTokenError {
    /// The JWS itself (401 `consent_signature`).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// (`iss`, `kid`) names no configured issuer key (401).
    #[error("the consent's issuer or key id is not configured")]
    UnknownIssuer,
    /// `sub` is not a valid personnummer (422 `invalid_personnummer`).
    #[error("claim `sub`: {0}")]
    Subject(PersonnummerError),
    /// A verified token's claims (422 `invalid_consent_claims`).
    #[error(transparent)]
    Claims(#[from] ClaimsError),
}

/// A consent JWS that cannot be verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not three base64url parts with a JSON header.
    #[error("the consent is not a well-formed compact JWS")]
    Malformed,
    /// `alg` is neither EdDSA nor ES256.
    #[error("the consent's algorithm is not allowed (EdDSA or ES256)")]
    Algorithm,
    /// The payload part is not base64url.
    #[error("the consent's payload is not base64url")]
    PayloadEncoding,
    /// The payload is not a JSON object (`iss` cannot be read).
    #[error("the consent's payload is not a JSON object")]
    PayloadNotObject,
    /// `alg` is not the issuer key's algorithm.
    #[error("the consent's algorithm does not match the issuer's key")]
    KeyAlgorithm,
    /// The signature does not verify.
    #[error("the consent's signature does not verify")]
    Invalid,
}

/// A verified consent whose claims are refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The payload is not JSON.
    #[error("the claims are not JSON")]
    NotJson,
    /// A claim (its path) is missing or of the wrong type.
    #[error("claim `{0}` is missing or has the wrong type")]
    Shape(String),
    /// `jti` is not a UUID.
    #[error("claim `jti` must be a UUID")]
    Jti,
    /// `aud` does not name samgate.
    #[error("claim `aud` must be `samgate`")]
    Audience,
    /// `method` is not one of [`METHODS`].
    #[error("`method` must be bankid, written or oral-documented")]
    Method,
    /// `recorded_by` is empty or over 200 bytes.
    #[error("`recorded_by` must name the staff member")]
    RecordedBy,
    /// `nbf` is not before `exp`.
    #[error("`nbf` must be before `exp`")]
    Window,
    /// `exp` has passed (beyond the leeway).
    #[error("the consent has expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("the consent is not valid yet")]
    NotYetValid,
    /// `iat` is ahead (beyond the leeway).
    #[error("`iat` is in the future")]
    IssuedInFuture,
    /// The consent's lifetime exceeds `[consent] max_lifetime` (in days).
    #[error("the consent's lifetime exceeds the maximum of {0} days")]
    Lifetime(i64),
    /// Fewer than two distinct parties.
    #[error("`parties` must name at least two parties")]
    TooFewParties,
    /// A party that is not configured; already quoted or `(not shown)`.
    #[error("`parties` names an unknown party {0}")]
    UnknownParty(String),
    /// No purpose.
    #[error("`purposes` must not be empty")]
    NoPurposes,
    /// A purpose no route has; quoted like [`Self::UnknownParty`].
    #[error("`purposes` names an unknown purpose {0}")]
    UnknownPurpose(String),
    /// No category.
    #[error("`categories` must not be empty")]
    NoCategories,
    /// An unknown category; quoted like [`Self::UnknownParty`].
    #[error("`categories` names an unknown category {0}")]
    UnknownCategory(String),
    /// `given_by.role` is not one of the representative roles.
    #[error("`given_by.role` must be guardian, god-man, forvaltare or fullmakt")]
    GivenByRole,
    /// `given_by.name` is empty or over 200 characters.
    #[error("`given_by.name` must name the representative (at most 200 characters)")]
    GivenByName,
}

impl ConsentVerifier {
    /// Loads the issuers' public keys from the config.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let mut issuers = HashMap::new();
        for (i, ci) in config.consent_issuers.iter().enumerate() {
            let file = PublicKeyFile::load(&ci.public_key)
                .map_err(|e| format!("consent_issuer[{i}].public_key: {e}"))?;
            if !matches!(file.alg, Algorithm::EdDSA | Algorithm::ES256) {
                return Err(format!(
                    "consent_issuer[{i}].public_key: consent keys must be Ed25519 or P-256"
                ));
            }
            let key = file
                .decoding_key()
                .map_err(|e| format!("consent_issuer[{i}].public_key: {e}"))?;
            issuers.insert(
                (ci.id.clone(), ci.key_id.clone()),
                IssuerKey { alg: file.alg, key },
            );
        }
        Ok(Self {
            issuers,
            parties: config
                .parties
                .iter()
                .map(|p| p.id.as_str().to_owned())
                .collect(),
            purposes: config.known_purposes(),
            max_lifetime_secs: i64::try_from(config.consent.max_lifetime.as_secs())
                .unwrap_or(i64::MAX),
        })
    }

    /// Verifies a compact JWS and its claims at `now`.
    pub fn verify(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<VerifiedConsent, ConsentTokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| SignatureError::Malformed)?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(SignatureError::Algorithm.into());
        }
        let payload_b64 = token.split('.').nth(1).unwrap_or("");
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| SignatureError::PayloadEncoding)?;
        // Nothing is read from an unverified payload but `iss` to pick the
        // key; a payload that cannot even be read cannot be verified (401).
        let peek: Peek =
            serde_json::from_slice(&payload).map_err(|_| SignatureError::PayloadNotObject)?;
        let iss = peek.iss.unwrap_or_default();
        let kid = header.kid.unwrap_or_default();
        let issuer = self
            .issuers
            .get(&(iss, kid.clone()))
            .ok_or(ConsentTokenError::UnknownIssuer)?;
        if issuer.alg != header.alg {
            return Err(SignatureError::KeyAlgorithm.into());
        }
        let mut v = Validation::new(issuer.alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims = Default::default();
        jsonwebtoken::decode::<serde_json::Value>(token, &issuer.key, &v)
            .map_err(|_| SignatureError::Invalid)?;
        let mut verified = self.claims(&payload, now)?;
        verified.key_id = kid;
        Ok(verified)
    }

    fn claims(
        &self,
        payload: &[u8],
        now: OffsetDateTime,
    ) -> Result<VerifiedConsent, ConsentTokenError> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| ClaimsError::NotJson)?;
        let c: ConsentClaims = serde_path_to_error::deserialize(value)
            .map_err(|e| ClaimsError::Shape(crate::http::error::shown_path(e.path())))?;
        let subject =
            Personnummer::parse_at(&c.sub, now.date()).map_err(ConsentTokenError::Subject)?;
        let id = uuid::Uuid::parse_str(&c.jti).map_err(|_| ClaimsError::Jti)?;
        if let Some(aud) = &c.aud {
            let ok = match aud {
                serde_json::Value::String(s) => s == "samgate",
                serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some("samgate")),
                _ => false,
            };
            if !ok {
                return Err(ClaimsError::Audience.into());
            }
        }
        self.check_times(&c, now.unix_timestamp())?;
        let (parties, purposes, categories) = self.scope(c.parties, c.purposes, &c.categories)?;
        if !METHODS.contains(&c.method.as_str()) {
            return Err(ClaimsError::Method.into());
        }
        if c.recorded_by.trim().is_empty() || c.recorded_by.len() > 200 {
            return Err(ClaimsError::RecordedBy.into());
        }
        let given_by = given_by(c.given_by)?;
        Ok(VerifiedConsent {
            id,
            subject,
            issuer: c.iss,
            key_id: String::new(),
            parties,
            purposes,
            categories,
            method: c.method,
            recorded_by: c.recorded_by,
            not_before: c.nbf,
            expires_at: c.exp,
            given_by,
            protected_identity: c.protected_identity.unwrap_or(false),
        })
    }

    /// `nbf` < `exp`, the consent valid now (with leeway), `iat` not in the
    /// future, and the lifetime within the maximum.
    fn check_times(&self, c: &ConsentClaims, now_s: i64) -> Result<(), ClaimsError> {
        if c.nbf >= c.exp {
            return Err(ClaimsError::Window);
        }
        if c.exp <= now_s - LEEWAY_SECS {
            return Err(ClaimsError::Expired);
        }
        if c.nbf > now_s + LEEWAY_SECS {
            return Err(ClaimsError::NotYetValid);
        }
        if let Some(iat) = c.iat {
            if iat > now_s + LEEWAY_SECS {
                return Err(ClaimsError::IssuedInFuture);
            }
        }
        if c.exp
            .checked_sub(c.nbf)
            .is_none_or(|d| d > self.max_lifetime_secs)
            || c.exp
                .checked_sub(now_s)
                .is_none_or(|d| d > self.max_lifetime_secs)
        {
            return Err(ClaimsError::Lifetime(self.max_lifetime_secs / 86_400));
        }
        Ok(())
    }

    /// The consent's parties, purposes and categories: each known, none
    /// empty, sorted and without repeats.
    fn scope(
        &self,
        parties: Vec<String>,
        purposes: Vec<String>,
        category_names: &[String],
    ) -> Result<Scope, ClaimsError> {
        let mut parties = parties;
        parties.sort();
        parties.dedup();
        if parties.len() < 2 {
            return Err(ClaimsError::TooFewParties);
        }
        if let Some(p) = parties.iter().find(|p| !self.parties.contains(*p)) {
            return Err(ClaimsError::UnknownParty(quote_id(p)));
        }
        if purposes.is_empty() {
            return Err(ClaimsError::NoPurposes);
        }
        if let Some(p) = purposes.iter().find(|p| !self.purposes.contains(*p)) {
            return Err(ClaimsError::UnknownPurpose(quote_id(p)));
        }
        if category_names.is_empty() {
            return Err(ClaimsError::NoCategories);
        }
        let mut categories = Vec::new();
        for cat in category_names {
            let parsed: Category = cat
                .parse()
                .map_err(|_| ClaimsError::UnknownCategory(quote_id(cat)))?;
            categories.push(parsed);
        }
        let mut purposes = purposes;
        purposes.sort();
        purposes.dedup();
        categories.sort();
        categories.dedup();
        Ok((parties, purposes, categories))
    }
}

/// A consent's parties, purposes and categories, checked.
type Scope = (Vec<String>, Vec<String>, Vec<Category>);

/// The representative of `given_by` (DESIGN §13): a known role and a name.
fn given_by(g: Option<GivenBy>) -> Result<Option<GivenBy>, ClaimsError> {
    Ok(match g {
        None => None,
        Some(g) => {
            if !super::lifecycle::ROLES.contains(&g.role.as_str()) {
                return Err(ClaimsError::GivenByRole);
            }
            let name = g.name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(ClaimsError::GivenByName);
            }
            Some(GivenBy {
                role: g.role,
                name: name.to_owned(),
            })
        }
    })
}
