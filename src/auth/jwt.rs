//! The second authentication layer: a party's user JWT naming a human user
//! (DESIGN §1, §9).
//!
//! Secure by construction: the algorithm is fixed by the configured key's
//! type (Ed25519 -> EdDSA, P-256 -> ES256, RSA -> RS256), so `none`, HS* and
//! algorithm confusion are refused before any signature check; `iss`, `aud`,
//! `exp` and `nbf` are required and checked with 60 s leeway; a `kid` that is
//! not the configured key's is refused.
//!
//! The user (`sub`) is written to the permanent audit log in clear
//! (`actor_user`), and staff e-ID subjects are often a personnummer. A `sub`
//! that the personnummer parser accepts (any DESIGN §3 spelling, Luhn-valid,
//! a real date) is therefore refused like any other bad token (401
//! `invalid_token`); the party must name its users by another id.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use x509_parser::prelude::FromDer;

use crate::subject::personnummer::Personnummer;

/// Largest clock skew accepted for `exp`/`nbf` (DESIGN §1: at most 60 s).
pub const LEEWAY_SECS: u64 = 60;

/// A public key read from an SPKI PEM file, with its JOSE algorithm.
#[derive(Clone)]
pub struct PublicKeyFile {
    /// The algorithm this key verifies.
    pub alg: Algorithm,
    /// The SPKI DER.
    pub spki_der: Vec<u8>,
    /// The PEM text (jsonwebtoken wants PEM).
    pem: Vec<u8>,
}

impl std::fmt::Debug for PublicKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKeyFile({:?}, {})",
            self.alg,
            key_id_of(&self.spki_der)
        )
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Unreadable.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// Not an SPKI PEM.
    #[error("{0}: not a PEM `PUBLIC KEY`")]
    NotPem(String),
    /// Not Ed25519, P-256 or RSA.
    #[error("{0}: unsupported key type (Ed25519, ECDSA P-256 or RSA expected)")]
    Unsupported(String),
}

const OID_ED25519: &str = "1.3.101.112";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

impl PublicKeyFile {
    /// Reads an SPKI PEM and tells its algorithm by OID.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let name = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| KeyFileError::Read(name.clone(), e))?;
        Self::from_pem(&text).map_err(|e| match e {
            KeyFileError::NotPem(_) => KeyFileError::NotPem(name),
            _ => KeyFileError::Unsupported(name),
        })
    }

    /// Parses SPKI PEM bytes.
    pub fn from_pem(text: &[u8]) -> Result<Self, KeyFileError> {
        let parsed = pem::parse(text).map_err(|_| KeyFileError::NotPem(String::new()))?;
        if parsed.tag() != "PUBLIC KEY" {
            return Err(KeyFileError::NotPem(String::new()));
        }
        let der = parsed.contents().to_vec();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
            .map_err(|_| KeyFileError::NotPem(String::new()))?;
        let oid = spki.algorithm.algorithm.to_id_string();
        let alg = match oid.as_str() {
            OID_ED25519 => Algorithm::EdDSA,
            OID_RSA => Algorithm::RS256,
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                if curve.as_deref() == Some(OID_P256) {
                    Algorithm::ES256
                } else {
                    return Err(KeyFileError::Unsupported(String::new()));
                }
            }
            _ => return Err(KeyFileError::Unsupported(String::new())),
        };
        Ok(Self {
            alg,
            spki_der: der,
            pem: text.to_vec(),
        })
    }

    /// The raw public key bytes (for Ed25519: the 32 key bytes).
    pub fn raw_key(&self) -> Vec<u8> {
        x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki_der)
            .map(|(_, s)| s.subject_public_key.data.to_vec())
            .unwrap_or_default()
    }

    /// A jsonwebtoken decoding key for this key.
    pub fn decoding_key(&self) -> Result<DecodingKey, KeyFileError> {
        let key = match self.alg {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&self.pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(&self.pem),
            _ => DecodingKey::from_rsa_pem(&self.pem),
        };
        key.map_err(|_| KeyFileError::Unsupported(String::new()))
    }

    /// The key id derived from the key: see [`key_id_of`].
    pub fn key_id(&self) -> String {
        key_id_of(&self.spki_der)
    }
}

/// A key id derived from the public key: the first 16 hex characters of
/// SHA-256 over the SPKI DER. Used when the config names no `key_id`, by
/// `samgate token sign`, and for the JWKS `kid` of the gateway's own keys.
pub fn key_id_of(spki_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
    hex::encode(d.as_ref()).chars().take(16).collect()
}

/// Why a user token was refused. Every variant maps to 401 `invalid_token`;
/// the variant only goes to the log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// No `Authorization: Bearer` header.
    #[error("a user token (Authorization: Bearer) is required for this party")]
    Missing,
    /// Not a JWT.
    #[error("the user token is not a well-formed JWT")]
    Malformed,
    /// `alg` is not the configured key's algorithm (covers `none` and HS*).
    #[error("the user token's algorithm is not allowed")]
    Algorithm,
    /// `kid` names another key.
    #[error("the user token names an unknown key id")]
    KeyId,
    /// Expired.
    #[error("the user token has expired")]
    Expired,
    /// Not yet valid.
    #[error("the user token is not valid yet")]
    NotYetValid,
    /// Signature, issuer, audience or a required claim is wrong.
    #[error("the user token is invalid ({0})")]
    Invalid(&'static str),
    /// `sub` is a personnummer (module docs). The message never holds it.
    #[error("the user token's sub is a personnummer; name the user by another id")]
    PersonnummerSubject,
}

/// Verifies one party's user tokens.
pub struct UserTokenVerifier {
    iss: String,
    audience: String,
    key: DecodingKey,
    alg: Algorithm,
    kid: String,
}

#[derive(Deserialize)]
struct UserClaims {
    sub: String,
}

impl UserTokenVerifier {
    /// Builds a verifier for a configured `jwt_issuer`.
    pub fn new(
        iss: &str,
        audience: &str,
        key: &PublicKeyFile,
        key_id: Option<&str>,
    ) -> Result<Self, KeyFileError> {
        if !matches!(
            key.alg,
            Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256
        ) {
            return Err(KeyFileError::Unsupported(String::new()));
        }
        Ok(Self {
            iss: iss.to_owned(),
            audience: audience.to_owned(),
            key: key.decoding_key()?,
            alg: key.alg,
            kid: key_id.map_or_else(|| key.key_id(), str::to_owned),
        })
    }

    /// Verifies a compact JWT and returns the user (`sub`). A `sub` that is
    /// a personnummer on `today` (the gateway clock's date) is refused.
    pub fn verify(&self, token: &str, today: time::Date) -> Result<String, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if header.alg != self.alg {
            return Err(JwtError::Algorithm);
        }
        if let Some(kid) = &header.kid {
            if *kid != self.kid {
                return Err(JwtError::KeyId);
            }
        }
        let mut v = Validation::new(self.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.iss]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<UserClaims>(token, &self.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => JwtError::Expired,
                K::ImmatureSignature => JwtError::NotYetValid,
                K::InvalidAlgorithm | K::InvalidAlgorithmName => JwtError::Algorithm,
                K::InvalidSignature => JwtError::Invalid("signature"),
                K::InvalidIssuer => JwtError::Invalid("issuer"),
                K::InvalidAudience => JwtError::Invalid("audience"),
                K::MissingRequiredClaim(_) => JwtError::Invalid("missing claim"),
                _ => JwtError::Malformed,
            }
        })?;
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > 256 || sub.chars().any(char::is_control) {
            return Err(JwtError::Invalid("sub"));
        }
        if Personnummer::parse_at(&sub, today).is_ok() {
            return Err(JwtError::PersonnummerSubject);
        }
        Ok(sub)
    }
}
