//! The printable consent receipt (DESIGN §13, after ISO/IEC TS 27560).
//!
//! [`build`] is the one place the receipt's content comes from. It reads the
//! consent summary through `GET /v1/consents/{id}`'s handler and lays out
//! the receipt fields (controllers, purposes, categories, legal basis,
//! method, given by, recorded by, validity, state, history). When the
//! gateway gains `GET /v1/consents/{id}/receipt`, `build` calls its builder
//! instead and the page stays the same.

use maud::{html, Markup};
use serde_json::Value;

use super::{date_of, labels, party_name, strings, user_name, when, PageError, Viewer};
use crate::state::AppState;

/// What a receipt shows.
pub(crate) struct Receipt {
    id: String,
    state: String,
    subject: String,
    controllers: Vec<String>,
    purposes: Vec<String>,
    categories: Vec<(String, String)>,
    legal_basis: &'static str,
    method: String,
    given_by: Option<String>,
    protected_identity: bool,
    closure: Option<String>,
    recorded_by: String,
    not_before: String,
    expires_at: String,
    history: Vec<(String, String)>,
}

const LEGAL_BASIS: &str =
    "Den registrerades samtycke (artikel 6.1 a och 9.2 a i dataskyddsförordningen), \
     som också häver sekretessen mellan parterna (12 kap. 2 § offentlighets- och sekretesslagen), \
     inom finansiell samordning enligt lag (2003:1210).";

fn event_label(e: &str) -> String {
    match e {
        "recorded" => "Registrerat".into(),
        "revoked" => "Återkallat".into(),
        "closure" => "Samverkan avslutad".into(),
        "expired" => "Gick ut".into(),
        other => other.into(),
    }
}

/// The receipt of consent `id`.
pub(crate) async fn build(
    state: &AppState,
    v: &Viewer,
    rid: Option<axum::Extension<crate::http::extract::RequestId>>,
    id: &str,
) -> Result<Receipt, PageError> {
    let s = super::intake::summary(state, v, rid, id).await?;
    Ok(from_summary(state, &s))
}

/// The `given_by` claim (DESIGN §13) of a recorded consent, read from its
/// sealed token, for a gateway whose summary does not carry it yet. Only
/// that claim leaves this function; the decrypted token is zeroized.
pub(crate) async fn given_by_of_token(state: &AppState, id: &str) -> Option<Value> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT token_key_id, token_nonce, token_sealed FROM consents WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(state.store.pool())
    .await
    .ok()
    .flatten();
    let (key_id, nonce, ciphertext) = row?;
    let sealed = crate::subject::vault::Sealed {
        key_id,
        nonce: nonce.try_into().ok()?,
        ciphertext,
    };
    let aad = crate::consent::api::token_aad(id);
    let token = state.crypto.vault.open_bytes(&aad, &sealed).ok()?;
    let payload = token.split(|b| *b == b'.').nth(1)?;
    use base64::Engine;
    let claims = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?,
    );
    #[derive(serde::Deserialize)]
    struct GivenBy {
        given_by: Option<Value>,
    }
    let claim: GivenBy = serde_json::from_slice(&claims).ok()?;
    claim.given_by.filter(Value::is_object)
}

/// Long: maps one consent summary to the receipt page field by field, in the
/// order of `Receipt`.
fn from_summary(state: &AppState, s: &Value) -> Receipt {
    let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
    let categories = strings(&s["categories"])
        .iter()
        .map(|c| {
            let found = crate::schema::Category::ALL
                .iter()
                .find(|x| x.as_str() == c)
                .map(|x| labels::category(*x));
            match found {
                Some((l, e)) => (l.to_owned(), e.to_owned()),
                None => (c.clone(), String::new()),
            }
        })
        .collect();
    // The summary's `history` (DESIGN §13) when the gateway has it; else
    // the events the summary itself shows.
    let mut history: Vec<(String, String)> = s["history"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let kind = e["event"]
                        .as_str()
                        .or_else(|| e["type"].as_str())
                        .unwrap_or("");
                    (event_label(kind), when(e["time"].as_str().unwrap_or("")))
                })
                .collect()
        })
        .unwrap_or_default();
    if history.is_empty() {
        history.push((event_label("recorded"), when(&text("recorded_at"))));
        if let Some(r) = s["revoked_at"].as_str() {
            history.push((event_label("revoked"), when(r)));
        } else if text("state") == "expired" {
            history.push((event_label("expired"), when(&text("expires_at"))));
        }
    }
    let purposes = strings(&s["purposes"]);
    let closure = s.get("closure").filter(|c| c.is_object()).map(|c| {
        labels::closure(
            &date_of(c["closed_at"].as_str().unwrap_or("")),
            &date_of(c["follow_up_until"].as_str().unwrap_or("")),
            purposes
                .iter()
                .any(|p| p == crate::consent::lifecycle::FOLLOW_UP_PURPOSE),
        )
    });
    let given_by = s.get("given_by").filter(|g| g.is_object()).map(|g| {
        format!(
            "{}: {}",
            labels::given_by(g["role"].as_str().unwrap_or("")),
            g["name"].as_str().unwrap_or("")
        )
    });
    Receipt {
        id: text("id"),
        state: labels::state(&text("state")),
        subject: text("subject"),
        controllers: strings(&s["parties"])
            .iter()
            .map(|p| party_name(state, p))
            .collect(),
        purposes: purposes
            .iter()
            .map(|p| labels::purpose_after(p, closure.is_some()))
            .collect(),
        categories,
        legal_basis: LEGAL_BASIS,
        method: labels::method(&text("method")),
        given_by,
        // The summary carries the subject's marking and, for a marked
        // subject, no contact category (DESIGN §13).
        protected_identity: s["protected_identity"].as_bool() == Some(true),
        closure,
        recorded_by: user_name(state, &text("recorded_by")),
        not_before: date_of(&text("not_before")),
        expires_at: date_of(&text("expires_at")),
        history,
    }
}

/// The receipt's page body (printable).
pub(crate) fn render(r: &Receipt) -> Markup {
    html! {
        div class="printable receipt" {
            p { "Det här är ett kvitto på ditt samtycke till att parterna nedan får dela uppgifter om dig med varandra. Spara det. Du kan när som helst återkalla samtycket hos samordningsförbundet." }
            dl class="summary" {
                dt { "Samtyckets id" } dd { code { (r.id) } }
                dt { "Status" } dd { (r.state) }
                dt { "Personuppgiftsansvariga (parter)" } dd { ul { @for c in &r.controllers { li { (c) } } } }
                dt { "Ändamål" } dd { ul { @for p in &r.purposes { li { (p) } } } }
                @if let Some(c) = &r.closure {
                    dt { "Avslut" } dd { (c) }
                }
                dt { "Uppgifter som får delas" } dd { ul { @for (l, e) in &r.categories { li { strong { (l) } @if !e.is_empty() { ": " (e) } } } } }
                @if r.protected_identity {
                    dt { "Skyddade personuppgifter" } dd { (labels::PROTECTED_IDENTITY) }
                }
                dt { "Rättslig grund" } dd { (r.legal_basis) }
                dt { "Hur samtycket lämnades" } dd { (r.method) }
                dt { "Lämnat av" } dd { @if let Some(g) = &r.given_by { (g) } @else { "Deltagaren själv" } }
                dt { "Registrerat av" } dd { (r.recorded_by) }
                dt { "Giltigt" } dd { "Från " (r.not_before) " till och med " (r.expires_at) }
                dt { "Händelser" } dd { ul { @for (e, t) in &r.history { li { (e) ": " (t) } } } }
                dt { "Deltagarens kod i samgate" } dd { code { (r.subject) } }
            }
        }
        p class="no-print" { button type="button" data-print="" { "Skriv ut kvittot" } " " a href={"/console/intake/consents/" (r.id)} { "Tillbaka till samtycket" } }
    }
}
