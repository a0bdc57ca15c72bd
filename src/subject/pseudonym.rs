//! Pseudonyms: per-domain keyed hashes of the canonical personnummer, so that
//! each recipient (and the audit log, and the consent store) sees a stable
//! identifier that no other domain can link to theirs.
//!
//! # Construction (DESIGN §3, §9 "Keys and files")
//!
//! ```text
//! K_d       = HKDF-SHA256(salt = "" , ikm = master key,
//!                         info = "samgate/pseudonym/v1/" || domain, L = 32)
//! pseudonym = "ps1_" || base32_lower_nopad(HMAC-SHA256(K_d, canonical)[0..16])
//! ```
//!
//! `canonical` is the 12 ASCII digits `YYYYMMDDNNNC`
//! ([`Personnummer::expose`]). The result is always 30 characters: `ps1_` and
//! 26 characters of RFC 4648 base32 in lowercase (128 bits, the last
//! character carrying 2 zero bits). Test vectors are in
//! `docs/test-vectors/pseudonyms.json` and checked by this module's tests.
//!
//! # Decisions
//!
//! - The domain of a recipient is its party id; [`DOMAIN_AUDIT`] and
//!   [`DOMAIN_CONSENT`] are domains of their own. The domain string is used
//!   as given (no normalisation), so callers must pass party ids exactly.
//! - Only the audit-domain pseudonym may appear in logs and audit records
//!   (STYLE "Secrets and personal data"); a recipient-domain pseudonym is
//!   shown only to that recipient.
//! - [`PseudonymMaster`] keeps the master key in a zeroizing buffer and prints
//!   only its key id. [`DomainKey`] holds a ready `ring::hmac::Key`, so a
//!   caller that pseudonymises many subjects for one domain derives once.
//! - A pseudonym is not secret in itself, so [`Pseudonym`] has `Debug`
//!   and `Serialize`; `Deserialize` checks its shape.
//! - **A pseudonym's type names its domain**: [`Pseudonym<Audit>`],
//!   [`Pseudonym<Consent>`] or [`Pseudonym<Party>`] (a recipient's or
//!   sender's domain), so a recipient's pseudonym cannot be put where the
//!   audit form is expected. The text is the same `ps1_…` in every domain
//!   (wire formats and stored values do not carry the type). Whoever derives
//!   one names the domain of the key it used: [`crate::crypto::Crypto`]
//!   does, by looking the key up under that domain's name.
//! - Rotating the master key changes every pseudonym; the key id is exposed
//!   so that stored pseudonyms can record which key produced them.

use std::fmt;
use std::marker::PhantomData;

use data_encoding::BASE32_NOPAD;
use ring::{hkdf, hmac};

use crate::keys::Secret32;
use crate::subject::personnummer::Personnummer;

/// The pseudonym domain of the audit log.
pub const DOMAIN_AUDIT: &str = "audit";
/// The pseudonym domain of the consent store.
pub const DOMAIN_CONSENT: &str = "consent";

/// HKDF `info` prefix; the domain name follows it.
const INFO_PREFIX: &[u8] = b"samgate/pseudonym/v1/";
/// Textual prefix of version-1 pseudonyms.
const PREFIX: &str = "ps1_";
/// Textual prefix of per-recipient consent references (DESIGN §10).
const CONSENT_REF_PREFIX: &str = "pc1_";
/// What precedes the consent id in the HMAC input of a consent reference.
const CONSENT_REF_INPUT_PREFIX: &[u8] = b"consent:";
/// Truncated HMAC length in bytes (128 bits).
const PSEUDONYM_BYTES: usize = 16;
/// Base32 characters for 16 bytes without padding.
const ENCODED_LEN: usize = 26;

/// Errors of this module. Never contain a personnummer or key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PseudonymError {
    /// Not `ps1_` followed by 26 lowercase base32 characters.
    #[error("pseudonym must be \"ps1_\" followed by 26 lowercase base32 characters")]
    Format,
    /// HKDF refused to derive the domain key (cannot happen for 32 bytes).
    #[error("pseudonym domain key derivation failed")]
    Derivation,
}

/// The pseudonym master key (`keys/pseudonym.key`).
pub struct PseudonymMaster {
    secret: Secret32,
}

impl PseudonymMaster {
    /// Wraps a loaded secret as the pseudonym master key.
    pub fn new(secret: Secret32) -> PseudonymMaster {
        PseudonymMaster { secret }
    }

    /// The key id of the master key (see [`Secret32::key_id`]).
    pub fn key_id(&self) -> &str {
        self.secret.key_id()
    }

    /// Derives `K_d` for `domain` (a party id, [`DOMAIN_AUDIT`] or [`DOMAIN_CONSENT`]).
    pub fn domain(&self, domain: &str) -> Result<DomainKey, PseudonymError> {
        let info = [INFO_PREFIX, domain.as_bytes()];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(self.secret.expose());
        // The output length is HMAC-SHA256's key length, 32 bytes.
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| PseudonymError::Derivation)?;
        Ok(DomainKey {
            domain: domain.to_owned(),
            master_key_id: self.key_id().to_owned(),
            key: hmac::Key::from(okm),
        })
    }

    /// Convenience: derives the domain key and pseudonymises `p` with it;
    /// `D` must be the kind of `domain` (see [`DomainKey::pseudonymise`]).
    pub fn pseudonymise<D: Domain>(
        &self,
        domain: &str,
        p: &Personnummer,
    ) -> Result<Pseudonym<D>, PseudonymError> {
        Ok(self.domain(domain)?.pseudonymise(p))
    }
}

impl fmt::Debug for PseudonymMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PseudonymMaster({})", self.key_id())
    }
}

/// A pseudonym domain without a derived key: every configured party,
/// `audit` and `consent` are derived at start, so this is a configuration
/// bug, never a client's mistake.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no pseudonym key for domain `{0}`")]
pub struct MissingDomain(pub String);

/// The derived key `K_d` of one pseudonym domain.
#[derive(Clone)]
pub struct DomainKey {
    domain: String,
    master_key_id: String,
    key: hmac::Key,
}

impl DomainKey {
    /// The domain this key belongs to.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The pseudonym of `p` in this domain. The caller names the kind of
    /// this key's domain as `D` ([`Audit`] for `audit`, [`Consent`] for
    /// `consent`, [`Party`] for a party id).
    pub fn pseudonymise<D: Domain>(&self, p: &Personnummer) -> Pseudonym<D> {
        let tag = hmac::sign(&self.key, p.expose().as_bytes());
        let mut truncated = [0u8; PSEUDONYM_BYTES];
        // HMAC-SHA256 tags are 32 bytes, so all 16 are filled.
        for (t, b) in truncated.iter_mut().zip(tag.as_ref()) {
            *t = *b;
        }
        let mut s = String::with_capacity(PREFIX.len() + ENCODED_LEN);
        s.push_str(PREFIX);
        s.push_str(&BASE32_NOPAD.encode(&truncated).to_ascii_lowercase());
        Pseudonym::new(s)
    }

    /// The per-recipient reference of a consent (DESIGN §10 "No join key
    /// across routes"): `pc1_` + lowercase base32 (no padding) of
    /// `HMAC-SHA256(K_d, "consent:" + consent id)` truncated to 128 bits.
    /// On `pseudonymise` and `omit` routes a recipient gets this instead of
    /// the consent id, so two recipients (or one recipient's pseudonymised
    /// and revealed messages) cannot be joined on it.
    pub fn consent_reference(&self, consent_id: &str) -> String {
        let mut input = Vec::with_capacity(8 + consent_id.len());
        input.extend_from_slice(CONSENT_REF_INPUT_PREFIX);
        input.extend_from_slice(consent_id.as_bytes());
        let tag = hmac::sign(&self.key, &input);
        let mut truncated = [0u8; PSEUDONYM_BYTES];
        for (t, b) in truncated.iter_mut().zip(tag.as_ref()) {
            *t = *b;
        }
        let mut s = String::with_capacity(CONSENT_REF_PREFIX.len() + ENCODED_LEN);
        s.push_str(CONSENT_REF_PREFIX);
        s.push_str(&BASE32_NOPAD.encode(&truncated).to_ascii_lowercase());
        s
    }
}

impl fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainKey({}, {})", self.domain, self.master_key_id)
    }
}

/// The kind of domain a pseudonym belongs to (module docs): [`Audit`],
/// [`Consent`] or [`Party`]. Sealed: these three are all there are.
pub trait Domain: sealed::Sealed + 'static {}

mod sealed {
    use crate::subject::pseudonym::{Audit, Consent, Party};

    pub trait Sealed {}
    impl Sealed for Audit {}
    impl Sealed for Consent {}
    impl Sealed for Party {}
}

/// The `audit` domain: the only form in audit records and logs.
#[derive(Debug)]
pub enum Audit {}

/// The `consent` domain: the consents' index.
#[derive(Debug)]
pub enum Consent {}

/// A party's own domain (named by its party id): what a recipient gets.
#[derive(Debug)]
pub enum Party {}

impl Domain for Audit {}
impl Domain for Consent {}
impl Domain for Party {}

/// A pseudonym in a domain of kind `D`: `ps1_` + 26 lowercase base32
/// characters (module docs). One domain's form is not another's:
///
/// ```compile_fail
/// use samgate::subject::pseudonym::{Audit, Party, Pseudonym};
/// let recipients: Pseudonym<Party> = "ps1_viiwwgqgxpseunetbirl6dzhga".parse().unwrap();
/// let audit: Pseudonym<Audit> = recipients; // refused: another domain
/// ```
pub struct Pseudonym<D: Domain> {
    text: String,
    domain: PhantomData<fn() -> D>,
}

impl<D: Domain> Pseudonym<D> {
    fn new(text: String) -> Pseudonym<D> {
        Pseudonym {
            text,
            domain: PhantomData,
        }
    }

    /// Checks the shape of a pseudonym received from outside (it cannot check
    /// that some key produced it, nor in which domain). Refuses uppercase and
    /// non-canonical trailing bits, so equal pseudonyms are equal strings.
    pub fn parse(s: &str) -> Result<Pseudonym<D>, PseudonymError> {
        let body = s.strip_prefix(PREFIX).ok_or(PseudonymError::Format)?;
        let canonical_case = body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        if body.len() != ENCODED_LEN || !canonical_case {
            return Err(PseudonymError::Format);
        }
        // BASE32_NOPAD checks that the unused trailing bits are zero.
        match BASE32_NOPAD.decode(body.to_ascii_uppercase().as_bytes()) {
            Ok(bytes) if bytes.len() == PSEUDONYM_BYTES => Ok(Pseudonym::new(s.to_owned())),
            _ => Err(PseudonymError::Format),
        }
    }

    /// The pseudonym as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

// By hand rather than derived: a derive would ask the marker `D` for the
// trait too.
impl<D: Domain> Clone for Pseudonym<D> {
    fn clone(&self) -> Self {
        Pseudonym::new(self.text.clone())
    }
}

impl<D: Domain> PartialEq for Pseudonym<D> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<D: Domain> Eq for Pseudonym<D> {}

impl<D: Domain> std::hash::Hash for Pseudonym<D> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl<D: Domain> PartialOrd for Pseudonym<D> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<D: Domain> Ord for Pseudonym<D> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl<D: Domain> fmt::Debug for Pseudonym<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pseudonym").field(&self.text).finish()
    }
}

impl<D: Domain> fmt::Display for Pseudonym<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<D: Domain> serde::Serialize for Pseudonym<D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de, D: Domain> serde::Deserialize<'de> for Pseudonym<D> {
    fn deserialize<De: serde::Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let s = String::deserialize(deserializer)?;
        Pseudonym::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<D: Domain> std::str::FromStr for Pseudonym<D> {
    type Err = PseudonymError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pseudonym::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn master() -> PseudonymMaster {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8;
        }
        PseudonymMaster::new(Secret32::new(key))
    }

    fn alva() -> Personnummer {
        Personnummer::parse_at("200203149828", date!(2026 - 06 - 15)).expect("valid")
    }

    /// Published in `docs/test-vectors/pseudonyms.json`. The text of a
    /// pseudonym does not depend on its type, so the tests derive every
    /// domain's as `Pseudonym<Party>`; cross-checked with
    /// an independent Python implementation (hmac/hashlib, RFC 5869 HKDF).
    const VECTORS: [(&str, &str); 6] = [
        ("audit", "ps1_viiwwgqgxpseunetbirl6dzhga"),
        ("consent", "ps1_fjcebcu6schhljckxw5wpe42ia"),
        ("fk", "ps1_e4honkyzkhccjb6rzkrrbtmtom"),
        ("af", "ps1_5man5mola4cyvop2e47iovtoyy"),
        ("kommun-kalmar", "ps1_4uaoulonzr3djciyxmt6hl7gsu"),
        ("region-kalmar", "ps1_lyzc2cog23esktls6n74z5lgki"),
    ];

    #[test]
    fn pseudonyms_match_the_published_vectors() {
        let m = master();
        for (domain, expected) in VECTORS {
            assert_eq!(
                m.pseudonymise::<Party>(domain, &alva())
                    .expect("derive")
                    .as_str(),
                expected
            );
            let key = m.domain(domain).expect("derive");
            assert_eq!(key.pseudonymise::<Party>(&alva()).as_str(), expected);
        }
        assert_eq!(DOMAIN_AUDIT, VECTORS[0].0);
        assert_eq!(DOMAIN_CONSENT, VECTORS[1].0);
    }

    #[test]
    fn the_published_vector_file_matches_the_code() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/test-vectors/pseudonyms.json"))
                .expect("json");
        let key = hex::decode(file["master_key_hex"].as_str().expect("hex")).expect("hex");
        let key: [u8; 32] = key.try_into().expect("32 bytes");
        let m = PseudonymMaster::new(Secret32::new(key));
        let p = Personnummer::parse_at(
            file["personnummer"].as_str().expect("string"),
            date!(2026 - 06 - 15),
        )
        .expect("valid");
        let vectors = file["pseudonyms"].as_object().expect("object");
        assert_eq!(vectors.len(), VECTORS.len());
        for (domain, expected) in VECTORS {
            assert_eq!(vectors[domain], expected);
            assert_eq!(
                m.pseudonymise::<Party>(domain, &p)
                    .expect("derive")
                    .as_str(),
                expected
            );
            // The intermediate K_d, for implementers debugging their HKDF.
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&key);
            let info = [INFO_PREFIX, domain.as_bytes()];
            let mut k_d = [0u8; 32];
            prk.expand(&info, hmac::HMAC_SHA256)
                .expect("expand")
                .fill(&mut k_d)
                .expect("fill");
            assert_eq!(file["domain_keys_hex"][domain], hex::encode(k_d));
        }
    }

    #[test]
    fn domains_do_not_share_pseudonyms_and_subjects_do_not_collide() {
        let m = master();
        let today = date!(2026 - 06 - 15);
        let people: Vec<Personnummer> = ["200203149828", "198209239865", "199905679933"]
            .iter()
            .map(|s| Personnummer::parse_at(s, today).expect("valid"))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for domain in ["audit", "consent", "fk", "af"] {
            for p in &people {
                assert!(seen.insert(m.pseudonymise::<Party>(domain, p).expect("derive")));
            }
        }
        // Equal input spellings give one pseudonym.
        let short = Personnummer::parse_at("020314-9828", today).expect("valid");
        assert_eq!(
            m.pseudonymise::<Party>("fk", &short).expect("derive"),
            m.pseudonymise("fk", &alva()).expect("derive")
        );
    }

    #[test]
    fn pseudonyms_parse_only_in_canonical_shape() {
        let good = "ps1_viiwwgqgxpseunetbirl6dzhga";
        assert_eq!(
            Pseudonym::<Audit>::parse(good).expect("valid").as_str(),
            good
        );
        for bad in [
            "",
            "ps1_",
            "ps2_viiwwgqgxpseunetbirl6dzhga",
            "ps1_VIIWWGQGXPSEUNETBIRL6DZHGA",
            "ps1_viiwwgqgxpseunetbirl6dzhg",
            "ps1_viiwwgqgxpseunetbirl6dzhgaa",
            "ps1_viiwwgqgxpseunetbirl6dzhg1",
            // Last character with non-zero trailing bits.
            "ps1_viiwwgqgxpseunetbirl6dzhgb",
            " ps1_viiwwgqgxpseunetbirl6dzhga",
        ] {
            assert_eq!(
                Pseudonym::<Audit>::parse(bad),
                Err(PseudonymError::Format),
                "{bad:?}"
            );
        }
        let json =
            serde_json::to_string(&Pseudonym::<Audit>::parse(good).expect("valid")).expect("json");
        assert_eq!(json, format!("\"{good}\""));
        let back: Pseudonym<Audit> = serde_json::from_str(&json).expect("json");
        assert_eq!(back.to_string(), good);
        assert!(serde_json::from_str::<Pseudonym<Audit>>("\"ps1_x\"").is_err());
    }

    #[test]
    fn keys_never_show_in_debug() {
        let m = master();
        assert_eq!(format!("{m:?}"), "PseudonymMaster(630dcd29)");
        let k = m.domain("fk").expect("derive");
        assert_eq!(format!("{k:?}"), "DomainKey(fk, 630dcd29)");
    }
}
