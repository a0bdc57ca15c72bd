//! The gateway's key material, loaded once at start (DESIGN §3, §9): the
//! pseudonym master key (with the domain keys of every party, `audit` and
//! `consent` derived up front), the vault key, the audit tree-head key and
//! the delivery signing key.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, SecretSource};
use crate::keys::{self, Ed25519Signer};
use crate::party::PartyId;
use crate::policy::SubjectMode;
use crate::startup::StartError;
use crate::subject::personnummer::Personnummer;
use crate::subject::pseudonym::{
    Audit, Consent, Domain, DomainKey, MissingDomain, Party, Pseudonym, PseudonymMaster,
    DOMAIN_AUDIT, DOMAIN_CONSENT,
};
use crate::subject::vault::VaultKey;

/// Loaded keys.
pub struct Crypto {
    /// Domain keys, derived up front; a config reload that adds a party
    /// adds its domain ([`Crypto::add_domains`]), so the map only grows.
    domains: arc_swap::ArcSwap<HashMap<String, DomainKey>>,
    master: PseudonymMaster,
    /// AES-256-GCM vault key.
    pub vault: VaultKey,
    /// Signs tree heads.
    pub audit_signer: Arc<Ed25519Signer>,
    /// Signs `Samgate-Signature`.
    pub delivery_signer: Arc<Ed25519Signer>,
    /// Keys the payload digest of audit records (see [`Crypto::payload_digest`]).
    payload_key: ring::hmac::Key,
    /// Keys the stored digest of idempotency keys (see [`Crypto::idempotency_digest`]).
    idempotency_key: ring::hmac::Key,
}

fn key_err(key: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Key {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

impl Crypto {
    /// Loads every key file named by the config (exit 2 on a bad file).
    pub fn load(config: &Config) -> Result<Crypto, StartError> {
        let k = &config.keys;
        let master_secret =
            load_secret(&k.pseudonym_master).map_err(|e| key_err("keys.pseudonym_master", e))?;
        let payload_key = derive_key(master_secret.expose(), b"samgate/payload-digest/v1");
        let idempotency_key = derive_key(master_secret.expose(), b"samgate/idempotency-key/v1");
        let master = PseudonymMaster::new(master_secret);
        let mut previous = Vec::new();
        for (i, src) in k.vault_previous.iter().enumerate() {
            let key = format!("keys.vault[{}]", i + 1);
            previous.push(load_secret(src).map_err(|e| key_err(&key, e))?);
        }
        let vault = VaultKey::new(load_secret(&k.vault).map_err(|e| key_err("keys.vault", e))?)
            .and_then(|v| v.with_previous(previous))
            .map_err(|e| key_err("keys.vault", e))?;
        let audit_signer = Arc::new(
            keys::load_ed25519_private(&k.audit_signing)
                .map_err(|e| key_err("keys.audit_signing", e))?,
        );
        let delivery_signer = Arc::new(
            keys::load_ed25519_private(&k.delivery_signing)
                .map_err(|e| key_err("keys.delivery_signing", e))?,
        );
        let mut domains = HashMap::new();
        let names = config
            .parties
            .iter()
            .map(|p| p.id.as_str().to_owned())
            .chain([DOMAIN_AUDIT.to_owned(), DOMAIN_CONSENT.to_owned()]);
        for name in names {
            let dk = master
                .domain(&name)
                .map_err(|e| key_err("keys.pseudonym_master", e))?;
            domains.insert(name, dk);
        }
        Ok(Crypto {
            payload_key,
            idempotency_key,
            domains: arc_swap::ArcSwap::from_pointee(domains),
            master,
            vault,
            audit_signer,
            delivery_signer,
        })
    }

    /// The pseudonym of `p` in the domain of `party` (a configured party id;
    /// every one is derived at start, so `None` means the party is not
    /// configured). The `audit` and `consent` domains are not parties' (the
    /// configuration refuses those ids): they have their own methods.
    pub fn pseudonym(&self, party: &str, p: &Personnummer) -> Option<Pseudonym<Party>> {
        if party == DOMAIN_AUDIT || party == DOMAIN_CONSENT {
            return None;
        }
        self.keyed(party, p)
    }

    /// The pseudonym of `p` under the key of `domain`, typed as the caller's
    /// kind of that domain (the only place a domain's kind is named).
    fn keyed<D: Domain>(&self, domain: &str, p: &Personnummer) -> Option<Pseudonym<D>> {
        self.domains.load().get(domain).map(|dk| dk.pseudonymise(p))
    }

    /// Derives the domain keys of `names` not derived yet (config reload).
    pub fn add_domains<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let current = self.domains.load();
        let mut next: Option<HashMap<String, DomainKey>> = None;
        for name in names {
            if current.contains_key(name) {
                continue;
            }
            let dk = self.master.domain(name).map_err(|e| e.to_string())?;
            next.get_or_insert_with(|| (**current).clone())
                .insert(name.to_owned(), dk);
        }
        if let Some(next) = next {
            self.domains.store(std::sync::Arc::new(next));
        }
        Ok(())
    }

    /// The pseudonym master's key id (logged at start, never the key).
    pub fn pseudonym_key_id(&self) -> &str {
        self.master.key_id()
    }

    /// The `audit`-domain pseudonym (the only form in audit records and logs).
    pub fn audit_pseudonym(&self, p: &Personnummer) -> Result<Pseudonym<Audit>, MissingDomain> {
        self.keyed(DOMAIN_AUDIT, p)
            .ok_or_else(|| MissingDomain(DOMAIN_AUDIT.to_owned()))
    }

    /// The consent reference a recipient gets on `pseudonymise` and `omit`
    /// routes (DESIGN §10): keyed with the recipient's own domain key.
    pub fn consent_reference(&self, recipient: &str, consent_id: &str) -> Option<String> {
        self.domains
            .load()
            .get(recipient)
            .map(|dk| dk.consent_reference(consent_id))
    }

    /// The `consent_id` a recipient gets (DESIGN §5, §10): the consent id on
    /// `reveal` routes; on `pseudonymise` and `omit` routes the recipient's
    /// own `pc1_` reference, so that it is no join key across routes or
    /// recipients. Exchanges and revocation notices both use this one rule.
    pub fn recipient_consent_id(
        &self,
        mode: SubjectMode,
        recipient: &PartyId,
        consent_id: Option<&str>,
    ) -> Option<String> {
        let id = consent_id?;
        match mode {
            SubjectMode::Reveal => Some(id.to_owned()),
            SubjectMode::Pseudonymise | SubjectMode::Omit => {
                self.consent_reference(recipient.as_str(), id)
            }
        }
    }

    /// The keyed digest under which an `Idempotency-Key` is stored (DESIGN
    /// §10 "Client-chosen strings"): HMAC-SHA256 of party, NUL, key under a
    /// key derived from the pseudonym master, so a key that holds a number
    /// never rests in clear and cannot be brute-forced from the table.
    pub fn idempotency_digest(&self, party: &str, key: &str) -> String {
        let mut input = Vec::with_capacity(party.len() + key.len() + 1);
        input.extend_from_slice(party.as_bytes());
        input.push(0);
        input.extend_from_slice(key.as_bytes());
        hex::encode(ring::hmac::sign(&self.idempotency_key, &input).as_ref())
    }

    /// The `consent`-domain pseudonym (consents are indexed by it).
    pub fn consent_pseudonym(&self, p: &Personnummer) -> Result<Pseudonym<Consent>, MissingDomain> {
        self.keyed(DOMAIN_CONSENT, p)
            .ok_or_else(|| MissingDomain(DOMAIN_CONSENT.to_owned()))
    }
}

/// `K = HKDF-SHA256(salt = empty, master, info)`, e.g. info
/// `"samgate/payload-digest/v1"` for the payload digest.
fn derive_key(master: &[u8; 32], info: &[u8]) -> ring::hmac::Key {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(master);
    match prk.expand(&[info], ring::hmac::HMAC_SHA256) {
        Ok(okm) => okm.into(),
        // Cannot fail for a 32-byte output; fall back to a key that is
        // still secret (the master itself) rather than panic.
        Err(_) => ring::hmac::Key::new(ring::hmac::HMAC_SHA256, master),
    }
}

impl Crypto {
    /// The `payload_sha256` of audit records: HMAC-SHA256 of the request
    /// body under a key derived from the pseudonym master. A plain SHA-256
    /// of a body that contains a personnummer could be brute-forced over
    /// the ~10^8 possible numbers; the keyed digest cannot, yet it still
    /// lets the operator prove which bytes a record refers to.
    pub fn payload_digest(&self, body: &[u8]) -> String {
        hex::encode(ring::hmac::sign(&self.payload_key, body).as_ref())
    }

    /// Seals text with the vault key, bound to `aad`, as
    /// `<key id>:<base64 nonce>:<base64 ciphertext>` for a TEXT column.
    pub fn seal_text(&self, aad: &[u8], plain: &str) -> Option<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let s = self.vault.seal_bytes(aad, plain.as_bytes()).ok()?;
        Some(format!(
            "{}:{}:{}",
            s.key_id,
            b64.encode(s.nonce),
            b64.encode(s.ciphertext)
        ))
    }

    /// Opens what [`Crypto::seal_text`] sealed with the same `aad`.
    pub fn open_text(&self, aad: &[u8], stored: &str) -> Option<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut parts = stored.splitn(3, ':');
        let key_id = parts.next()?.to_owned();
        let nonce: [u8; 12] = b64.decode(parts.next()?).ok()?.try_into().ok()?;
        let ciphertext = b64.decode(parts.next()?).ok()?;
        let sealed = crate::subject::vault::Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let plain = self.vault.open_bytes(aad, &sealed).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

fn load_secret(src: &SecretSource) -> Result<keys::Secret32, keys::KeyError> {
    match src {
        SecretSource::File(p) => keys::load_secret32(p),
        SecretSource::Env(var) => keys::load_secret32_env(var),
    }
}
