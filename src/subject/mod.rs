//! The subject of an exchange: the personnummer (parsed once, printed
//! redacted), its per-domain pseudonyms, and the vault that seals it.
//!
//! [`Subject`] is computed once per exchange (or consent) from the parsed
//! number: its audit form (the only form in audit records and logs), its
//! consent form (consents are indexed by it) and, for an exchange, the
//! recipient's pseudonym, each keyed once. It is the one value that holds
//! the number in clear on the request path; every later step asks it for the
//! form it needs. [`reidentify`] is the only way back from a pseudonym to the
//! number, and it appends its own `reidentified` record.

pub mod personnummer;
pub mod pseudonym;
pub mod vault;

use crate::audit::record::{Action, AuditRecord, Decision};
use crate::crypto::Crypto;
use crate::error::ApiError;
use crate::party::PartyId;
use crate::policy::SubjectMode;
use crate::state::AppState;
use crate::store::Stmt;
use personnummer::Personnummer;
use pseudonym::{Audit, Consent, MissingDomain, Party, Pseudonym};
use vault::Row;

/// The subject of one exchange or consent, with its keyed forms.
#[derive(Clone)]
pub struct Subject {
    number: Personnummer,
    audit: Pseudonym<Audit>,
    consent: Pseudonym<Consent>,
    /// The recipient's pseudonym (exchanges only): `(party, pseudonym)`.
    recipient: Option<(PartyId, Pseudonym<Party>)>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// The subject `number`, its audit and consent forms, and (when given)
    /// the pseudonym of `recipient`.
    pub fn new(
        crypto: &Crypto,
        number: Personnummer,
        recipient: Option<&PartyId>,
    ) -> Result<Subject, MissingDomain> {
        let audit = crypto.audit_pseudonym(&number)?;
        let consent = crypto.consent_pseudonym(&number)?;
        let recipient = match recipient {
            Some(r) => {
                let ps = (crypto.pseudonym(r.as_str(), &number))
                    .ok_or_else(|| MissingDomain(r.to_string()))?;
                Some((r.clone(), ps))
            }
            None => None,
        };
        Ok(Subject {
            number,
            audit,
            consent,
            recipient,
        })
    }

    /// The `audit`-domain pseudonym (audit records, logs).
    pub fn audit(&self) -> &Pseudonym<Audit> {
        &self.audit
    }

    /// The `consent`-domain pseudonym (the consents' index).
    pub fn consent(&self) -> &Pseudonym<Consent> {
        &self.consent
    }

    /// The number itself (the recipient's `subject` on `reveal` routes).
    pub fn number(&self) -> &Personnummer {
        &self.number
    }

    /// Whether `other` is this subject's number.
    pub fn is(&self, other: &Personnummer) -> bool {
        other.expose() == self.number.expose()
    }

    /// The recipient's pseudonym of the subject, when it was computed.
    pub fn recipient_pseudonym(&self) -> Option<&Pseudonym<Party>> {
        self.recipient.as_ref().map(|(_, ps)| ps)
    }

    /// How the subject travels to the exchange's recipient under `mode`:
    /// the number, the recipient's pseudonym, or not at all.
    pub fn recipient_form(&self, mode: SubjectMode) -> Option<String> {
        match mode {
            SubjectMode::Reveal => Some(self.number.expose().to_owned()),
            SubjectMode::Pseudonymise => {
                self.recipient_pseudonym().map(|ps| ps.as_str().to_owned())
            }
            SubjectMode::Omit => None,
        }
    }

    /// The vault rows of an exchange: the audit domain, and the recipient's
    /// domain when its pseudonym leaves the gateway (that is what a reply
    /// may need to resolve). `known` skips rows already stored.
    pub fn exchange_vault_rows(
        &self,
        crypto: &Crypto,
        mode: SubjectMode,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<Stmt>, Vec<String>), ApiError> {
        let mut rows = vec![Row::Audit(&self.audit)];
        if let (SubjectMode::Pseudonymise, Some((party, ps))) = (mode, &self.recipient) {
            rows.push(Row::Party(party.as_str(), ps));
        }
        crypto
            .vault
            .rows(&self.number, &rows, known)
            .map_err(ApiError::internal)
    }

    /// The vault rows of a recorded consent: the consent and audit domains.
    pub fn consent_vault_rows(
        &self,
        crypto: &Crypto,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<Stmt>, Vec<String>), ApiError> {
        let rows = [Row::Consent(&self.consent), Row::Audit(&self.audit)];
        crypto
            .vault
            .rows(&self.number, &rows, known)
            .map_err(ApiError::internal)
    }
}

/// How a number travels to `recipient` on a route: revealed, the
/// recipient's pseudonym, or removed (replies, whose recipient is the
/// forward exchange's sender).
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

/// The only path from a pseudonym back to the personnummer (DESIGN §3):
/// opens the vault row `row` and, before the number is released, appends
/// `record` as a `reidentified` audit record. `None` when the row does not
/// exist or does not open (nothing is recorded then).
pub async fn reidentify(
    state: &AppState,
    row: Row<'_>,
    mut record: AuditRecord,
) -> Result<Option<Personnummer>, ApiError> {
    let Some(number) = open_vault_row(state, row).await? else {
        return Ok(None);
    };
    record.action = Action::Reidentified;
    record.decision = Decision::Permit;
    state.audit.append(record, Vec::new()).await?;
    Ok(Some(number))
}

/// Opens the vault row `row`: the one reader of the `vault` table.
/// [`reidentify`] records what it opens; the other caller is the gateway's
/// own revocation notice ([`crate::consent::notices`]), which names the
/// subject only to parties that already received them in that form.
pub(crate) async fn open_vault_row(
    state: &AppState,
    row: Row<'_>,
) -> Result<Option<Personnummer>, sqlx::Error> {
    let stored: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, nonce, ciphertext FROM vault WHERE domain = $1 AND pseudonym = $2",
    )
    .bind(row.domain().to_owned())
    .bind(row.pseudonym().to_owned())
    .fetch_optional(state.store.pool())
    .await?;
    let Some((key_id, nonce, ciphertext)) = stored else {
        return Ok(None);
    };
    let Ok(nonce) = <[u8; 12]>::try_from(nonce.as_slice()) else {
        return Ok(None);
    };
    let sealed = vault::Sealed {
        key_id,
        nonce,
        ciphertext,
    };
    let today = state.clock.now().date();
    Ok(state.crypto.vault.open(row, &sealed, today).ok())
}
