//! Signing tokens: user JWTs (`samgate token sign`) and consent JWSs
//! (`samgate consent sign`, used by intake systems and tests).

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file could not be read.
    #[error("cannot read key {0}: {1}")]
    Read(String, std::io::Error),
    /// The key is not a usable PKCS#8 PEM.
    #[error("{0}: not an Ed25519 or P-256 PKCS#8 private key")]
    Key(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// The user token's `sub` is a personnummer, which the gateway refuses
    /// (401 `invalid_token`, see `auth::jwt`).
    #[error("the user token's sub is a personnummer; name the user by another id")]
    SubIsPersonnummer,
}

/// A private signing key with its algorithm and derived key id.
pub struct SigningKeyFile {
    /// EdDSA or ES256.
    pub alg: Algorithm,
    key: EncodingKey,
    /// `kid` derived from the public key (see `auth::jwt::key_id_of`).
    pub derived_kid: String,
}

impl SigningKeyFile {
    /// Reads a PKCS#8 PEM (Ed25519 or P-256).
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let name = path.display().to_string();
        let pem_bytes = std::fs::read(path).map_err(|e| SignError::Read(name.clone(), e))?;
        let parsed = pem::parse(&pem_bytes).map_err(|_| SignError::Key(name.clone()))?;
        let der = parsed.contents();
        if let Ok(kp) = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            use ring::signature::KeyPair;
            let spki = ed25519_spki(kp.public_key().as_ref());
            return Ok(Self {
                alg: Algorithm::EdDSA,
                key: EncodingKey::from_ed_der(der),
                derived_kid: crate::auth::jwt::key_id_of(&spki),
            });
        }
        let rng = ring::rand::SystemRandom::new();
        if let Ok(kp) = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &rng,
        ) {
            use ring::signature::KeyPair;
            let spki = p256_spki(kp.public_key().as_ref());
            return Ok(Self {
                alg: Algorithm::ES256,
                key: EncodingKey::from_ec_der(der),
                derived_kid: crate::auth::jwt::key_id_of(&spki),
            });
        }
        Err(SignError::Key(name))
    }

    /// Signs claims as a compact JWS with `kid`.
    pub fn sign<T: Serialize>(&self, kid: &str, claims: &T) -> Result<String, SignError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| SignError::Sign(e.to_string()))
    }
}

/// DER SubjectPublicKeyInfo of an Ed25519 public key (RFC 8410).
pub fn ed25519_spki(raw: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    v.extend_from_slice(raw);
    v
}

/// DER SubjectPublicKeyInfo of an uncompressed P-256 public key (RFC 5480).
pub fn p256_spki(raw: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    v.extend_from_slice(raw);
    v
}

#[derive(Serialize)]
struct UserClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// A user JWT for a party's `jwt_issuer` (DESIGN §9).
pub fn sign_user_token(
    key: &Path,
    iss: &str,
    sub: &str,
    aud: &str,
    minutes: u32,
) -> Result<String, SignError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "a token signed on the command line is valid from the real time"
    )]
    let signed_at = time::OffsetDateTime::now_utc();
    // Refused as the gateway would refuse it: a personnummer on that date.
    if crate::subject::personnummer::Personnummer::parse_at(sub, signed_at.date()).is_ok() {
        return Err(SignError::SubIsPersonnummer);
    }
    let k = SigningKeyFile::load(key)?;
    let now = signed_at.unix_timestamp();
    let claims = UserClaims {
        iss,
        sub,
        aud,
        iat: now,
        nbf: now,
        exp: now + i64::from(minutes) * 60,
    };
    k.sign(&k.derived_kid.clone(), &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_token_naming_a_personnummer_is_not_signed() {
        let key = Path::new("/nonexistent/users.key");
        for sub in ["200203149828", "20020314-9828", "020314-9828"] {
            assert!(matches!(
                sign_user_token(key, "iss", sub, "samgate", 5),
                Err(SignError::SubIsPersonnummer)
            ));
        }
        // Anything else goes on to the key (missing here).
        assert!(matches!(
            sign_user_token(key, "iss", "anna.lind", "samgate", 5),
            Err(SignError::Read(..))
        ));
    }
}
