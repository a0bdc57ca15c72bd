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
use crate::error::{ApiError, ProblemCode};
use crate::schema::Category;
use crate::subject::personnummer::Personnummer;

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

fn claims_error(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemCode::InvalidConsentClaims, detail)
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
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<VerifiedConsent, ApiError> {
        let sig_err = |d: &str| ApiError::new(ProblemCode::ConsentSignature, d.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| sig_err("the consent is not a well-formed compact JWS"))?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(sig_err(
                "the consent's algorithm is not allowed (EdDSA or ES256)",
            ));
        }
        let payload_b64 = token.split('.').nth(1).unwrap_or("");
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| sig_err("the consent's payload is not base64url"))?;
        // Nothing is read from an unverified payload but `iss` to pick the
        // key; a payload that cannot even be read cannot be verified (401).
        let peek: Peek = serde_json::from_slice(&payload)
            .map_err(|_| sig_err("the consent's payload is not a JSON object"))?;
        let iss = peek.iss.unwrap_or_default();
        let kid = header.kid.unwrap_or_default();
        let issuer = self.issuers.get(&(iss, kid.clone())).ok_or_else(|| {
            ApiError::new(
                ProblemCode::UnknownIssuer,
                "the consent's issuer or key id is not configured",
            )
        })?;
        if issuer.alg != header.alg {
            return Err(sig_err(
                "the consent's algorithm does not match the issuer's key",
            ));
        }
        let mut v = Validation::new(issuer.alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims = Default::default();
        jsonwebtoken::decode::<serde_json::Value>(token, &issuer.key, &v)
            .map_err(|_| sig_err("the consent's signature does not verify"))?;
        let mut verified = self.claims(&payload, now)?;
        verified.key_id = kid;
        Ok(verified)
    }

    fn claims(&self, payload: &[u8], now: OffsetDateTime) -> Result<VerifiedConsent, ApiError> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| claims_error("the claims are not JSON"))?;
        let c: ConsentClaims = serde_path_to_error::deserialize(value).map_err(|e| {
            claims_error(format!(
                "claim `{}` is missing or has the wrong type",
                e.path()
            ))
        })?;
        let subject = Personnummer::parse_at(&c.sub, now.date()).map_err(|e| {
            ApiError::new(
                ProblemCode::InvalidPersonnummer,
                format!("claim `sub`: {e}"),
            )
        })?;
        let id = uuid::Uuid::parse_str(&c.jti)
            .map_err(|_| claims_error("claim `jti` must be a UUID"))?;
        if let Some(aud) = &c.aud {
            let ok = match aud {
                serde_json::Value::String(s) => s == "samgate",
                serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some("samgate")),
                _ => false,
            };
            if !ok {
                return Err(claims_error("claim `aud` must be `samgate`"));
            }
        }
        self.check_times(&c, now.unix_timestamp())?;
        let (parties, purposes, categories) = self.scope(c.parties, c.purposes, &c.categories)?;
        if !METHODS.contains(&c.method.as_str()) {
            return Err(claims_error(
                "`method` must be bankid, written or oral-documented",
            ));
        }
        if c.recorded_by.trim().is_empty() || c.recorded_by.len() > 200 {
            return Err(claims_error("`recorded_by` must name the staff member"));
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
    fn check_times(&self, c: &ConsentClaims, now_s: i64) -> Result<(), ApiError> {
        if c.nbf >= c.exp {
            return Err(claims_error("`nbf` must be before `exp`"));
        }
        if c.exp <= now_s - LEEWAY_SECS {
            return Err(claims_error("the consent has expired"));
        }
        if c.nbf > now_s + LEEWAY_SECS {
            return Err(claims_error("the consent is not valid yet"));
        }
        if let Some(iat) = c.iat {
            if iat > now_s + LEEWAY_SECS {
                return Err(claims_error("`iat` is in the future"));
            }
        }
        if c.exp
            .checked_sub(c.nbf)
            .is_none_or(|d| d > self.max_lifetime_secs)
            || c.exp
                .checked_sub(now_s)
                .is_none_or(|d| d > self.max_lifetime_secs)
        {
            return Err(claims_error(format!(
                "the consent's lifetime exceeds the maximum of {} days",
                self.max_lifetime_secs / 86_400
            )));
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
    ) -> Result<Scope, ApiError> {
        let mut parties = parties;
        parties.sort();
        parties.dedup();
        if parties.len() < 2 {
            return Err(claims_error("`parties` must name at least two parties"));
        }
        for p in &parties {
            if !self.parties.contains(p) {
                return Err(claims_error(format!(
                    "`parties` names an unknown party {}",
                    crate::error::quote_id(p)
                )));
            }
        }
        if purposes.is_empty() {
            return Err(claims_error("`purposes` must not be empty"));
        }
        for p in &purposes {
            if !self.purposes.contains(p) {
                return Err(claims_error(format!(
                    "`purposes` names an unknown purpose {}",
                    crate::error::quote_id(p)
                )));
            }
        }
        if category_names.is_empty() {
            return Err(claims_error("`categories` must not be empty"));
        }
        let mut categories = Vec::new();
        for cat in category_names {
            let parsed: Category = cat.parse().map_err(|_| {
                claims_error(format!(
                    "`categories` names an unknown category {}",
                    crate::error::quote_id(cat)
                ))
            })?;
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
fn given_by(g: Option<GivenBy>) -> Result<Option<GivenBy>, ApiError> {
    Ok(match g {
        None => None,
        Some(g) => {
            if !super::lifecycle::ROLES.contains(&g.role.as_str()) {
                return Err(claims_error(
                    "`given_by.role` must be guardian, god-man, forvaltare or fullmakt",
                ));
            }
            let name = g.name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(claims_error(
                    "`given_by.name` must name the representative (at most 200 characters)",
                ));
            }
            Some(GivenBy {
                role: g.role,
                name: name.to_owned(),
            })
        }
    })
}
