//! The subject of an exchange: the personnummer (parsed once, printed
//! redacted), its per-domain pseudonyms, and the vault that seals it.

pub mod personnummer;
pub mod pseudonym;
pub mod vault;

use crate::crypto::Crypto;
use crate::party::PartyId;
use crate::policy::SubjectMode;
use personnummer::Personnummer;

/// How the subject travels to `recipient` on a route: revealed, the
/// recipient's pseudonym, or removed.
pub fn recipient_form(
    crypto: &Crypto,
    mode: SubjectMode,
    recipient: &PartyId,
    p: &Personnummer,
) -> Option<String> {
    match mode {
        SubjectMode::Reveal => Some(p.expose().to_owned()),
        SubjectMode::Pseudonymise => crypto
            .pseudonym(recipient.as_str(), p)
            .map(|x| x.as_str().to_owned()),
        SubjectMode::Omit => None,
    }
}

/// The `consent_id` a recipient gets (DESIGN §5, §10): the consent id on
/// `reveal` routes; on `pseudonymise` and `omit` routes the recipient's own
/// `pc1_` reference, so that it is no join key across routes or recipients.
/// Exchanges and revocation notices both use this one rule.
pub fn consent_reference(
    crypto: &Crypto,
    mode: SubjectMode,
    recipient: &PartyId,
    consent_id: Option<&str>,
) -> Option<String> {
    let id = consent_id?;
    match mode {
        SubjectMode::Reveal => Some(id.to_owned()),
        SubjectMode::Pseudonymise | SubjectMode::Omit => {
            crypto.consent_reference(recipient.as_str(), id)
        }
    }
}
