//! Intake pages (DESIGN §11): record a consent from a form, find a
//! participant's consents, revoke with a reason, print the receipt and the
//! register extract. The personnummer only ever travels in POST bodies and
//! is never written back into a page.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::{html, Markup};
use serde_json::{json, Value};

use super::page::{csrf_field, errors, layout, respond, respond_page};
use super::{
    all, api_body, array_at, csrf, date_of, first, json_of, labels, party_name, strings, user_name,
    when, AsIntake, PageError, Posted, Staff, Viewer,
};
use crate::config::CONSOLE_ISSUER_ID;
use crate::http::extract::RequestId;
use crate::party::Role;
use crate::schema::Category;
use crate::state::AppState;
use crate::subject::personnummer::{Personnummer, PersonnummerError};

type Rid = Option<Extension<RequestId>>;

/// What the consent form was filled with (never the personnummer).
#[derive(Debug, Clone, Default)]
struct Filled {
    parties: Vec<String>,
    purposes: Vec<String>,
    categories: Vec<String>,
    method: String,
    valid_until: String,
    given_by_role: String,
    given_by_name: String,
    protected_identity: bool,
}

fn defaults(state: &AppState) -> Filled {
    let until = state
        .clock
        .now()
        .date()
        .saturating_add(time::Duration::days(365));
    Filled {
        parties: state
            .live()
            .config
            .parties
            .iter()
            .filter(|p| p.roles.contains(&Role::Agency))
            .map(|p| p.id.to_string())
            .collect(),
        purposes: state
            .live()
            .config
            .known_purposes()
            .into_iter()
            .filter(|p| p != "statistik")
            .collect(),
        categories: Vec::new(),
        method: "written".into(),
        valid_until: until.to_string(),
        given_by_role: String::new(),
        given_by_name: String::new(),
        protected_identity: false,
    }
}

/// Swedish message for a personnummer error (never the number).
pub(crate) fn pnr_message(e: PersonnummerError) -> String {
    match e {
        PersonnummerError::Format => {
            "Personnumret har fel form. Skriv det som ÅÅÅÅMMDD-NNNN eller ÅÅMMDD-NNNN.".into()
        }
        PersonnummerError::Date => "Personnumret innehåller ett datum som inte finns.".into(),
        PersonnummerError::Serial => "Personnumret har löpnumret 000, som aldrig delas ut.".into(),
        PersonnummerError::Checksum => {
            "Personnumrets kontrollsiffra stämmer inte. Kontrollera siffrorna.".into()
        }
    }
}

/// Parses the form's personnummer field.
pub(crate) fn pnr_field(
    state: &AppState,
    pairs: &[(String, String)],
) -> Result<Personnummer, String> {
    let raw = first(pairs, "personnummer").unwrap_or("").trim();
    if raw.is_empty() {
        return Err("Fyll i deltagarens personnummer eller samordningsnummer.".into());
    }
    Personnummer::parse_at(raw, state.clock.now().date()).map_err(pnr_message)
}

fn pnr_input(id: &str) -> Markup {
    html! {
        label for=(id) { "Personnummer eller samordningsnummer" }
        span class="hint" id={(id) "-hint"} { "ÅÅÅÅMMDD-NNNN. Numret visas aldrig på skärmen igen och hamnar aldrig i en adress." }
        input type="text" id=(id) name="personnummer" required autocomplete="off" inputmode="numeric" spellcheck="false" aria-describedby={(id) "-hint"};
    }
}

/// Long: one maud template of the form, fieldset by fieldset in the order it
/// renders.
fn consent_form(state: &AppState, token: &str, f: &Filled, errs: &[String]) -> Markup {
    let parties: Vec<_> = state
        .live()
        .config
        .parties
        .iter()
        .filter(|p| p.roles.contains(&Role::Agency))
        .collect();
    let purposes = state.live().config.known_purposes();
    html! {
        section aria-labelledby="new-consent" {
            h2 id="new-consent" { "Registrera ett samtycke" }
            (errors(errs))
            form method="post" action="/console/intake/consents" class="stack" novalidate {
                (csrf_field(token))
                div class="field" { (pnr_input("pnr-new")) }
                fieldset {
                    legend { "Parter som får dela uppgifter med varandra" }
                    @for p in &parties {
                        div class="check" {
                            input type="checkbox" name="parties" value=(p.id) id={"party-" (p.id)} checked[f.parties.iter().any(|x| x == p.id.as_str())];
                            label for={"party-" (p.id)} { (p.name) }
                        }
                    }
                }
                fieldset {
                    legend { "Ändamål" }
                    @for p in &purposes {
                        div class="check" {
                            input type="checkbox" name="purposes" value=(p) id={"purpose-" (p)} checked[f.purposes.contains(p)];
                            label for={"purpose-" (p)} { (labels::purpose(p)) }
                        }
                    }
                }
                fieldset {
                    legend { "Uppgifter som får delas" }
                    @for c in Category::ALL {
                        @let (label, explain) = labels::category(c);
                        div class="check" {
                            input type="checkbox" name="categories" value=(c.as_str()) id={"cat-" (c.as_str())} checked[f.categories.iter().any(|x| x == c.as_str())] aria-describedby={"cat-" (c.as_str()) "-hint"};
                            label for={"cat-" (c.as_str())} { (label) }
                            span class="hint" id={"cat-" (c.as_str()) "-hint"} { (explain) }
                        }
                    }
                }
                fieldset {
                    legend { "Skyddade personuppgifter" }
                    div class="check" {
                        input type="checkbox" name="protected_identity" value="yes" id="protected-identity" checked[f.protected_identity] aria-describedby="protected-identity-hint";
                        label for="protected-identity" { "Deltagaren har skyddade personuppgifter" }
                        span class="hint" id="protected-identity-hint" { "Markeringen i folkbokföringen (sekretessmarkering eller skyddad folkbokföring). Då lämnas kontaktuppgifter aldrig ut, vad samtycket och rutten än säger." }
                    }
                }
                fieldset {
                    legend { "Hur samtycket lämnades" }
                    @for (k, v) in labels::METHODS {
                        div class="check" {
                            input type="radio" name="method" value=(k) id={"method-" (k)} checked[f.method == k];
                            label for={"method-" (k)} { (v) }
                        }
                    }
                }
                div class="field" {
                    label for="valid-until" { "Giltigt till och med" }
                    span class="hint" id="valid-until-hint" { "Samtycket gäller från i dag. Högst " (state.config.consent.max_lifetime.as_secs() / 86_400) " dagar." }
                    input type="date" id="valid-until" name="valid_until" value=(f.valid_until) required aria-describedby="valid-until-hint";
                }
                fieldset {
                    legend { "Lämnat av företrädare (valfritt)" }
                    div class="field" {
                        label for="given-by-role" { "Företrädarens roll" }
                        select id="given-by-role" name="given_by_role" {
                            option value="" selected[f.given_by_role.is_empty()] { "Deltagaren själv" }
                            @for (k, v) in labels::GIVEN_BY {
                                option value=(k) selected[f.given_by_role == k] { (v) }
                            }
                        }
                    }
                    div class="field" {
                        label for="given-by-name" { "Företrädarens namn" }
                        input type="text" id="given-by-name" name="given_by_name" value=(f.given_by_name) autocomplete="off";
                    }
                }
                p { button type="submit" { "Registrera samtycket" } }
            }
        }
    }
}

fn lookup_forms(token: &str) -> Markup {
    html! {
        section aria-labelledby="find" {
            h2 id="find" { "Hitta en deltagares samtycken" }
            form method="post" action="/console/intake/search" class="stack" {
                (csrf_field(token))
                div class="field" { (pnr_input("pnr-search")) }
                p { button type="submit" { "Sök samtycken" } }
            }
        }
        section aria-labelledby="extract" {
            h2 id="extract" { "Registerutdrag för en deltagare" }
            p { "Alla utbyten om deltagaren: när, från vem, till vem, vilka uppgifter och under vilket samtycke." }
            form method="post" action="/console/intake/extract" class="stack" {
                (csrf_field(token))
                div class="field" { (pnr_input("pnr-extract")) }
                p { button type="submit" { "Visa registerutdrag" } }
            }
        }
    }
}

/// The lookup forms again, with the reason a lookup was refused (422).
fn lookup_refused(state: &AppState, v: &Viewer, title: &str, error: String) -> Response {
    let token = csrf(state, v);
    let body = html! { (errors(&[error])) (lookup_forms(&token)) };
    respond_page(StatusCode::UNPROCESSABLE_ENTITY, title, Some(v), body)
}

fn intake_page(
    state: &AppState,
    v: &Viewer,
    f: &Filled,
    errs: &[String],
    status: StatusCode,
) -> Response {
    let token = csrf(state, v);
    let body = html! {
        (consent_form(state, &token, f, errs))
        (lookup_forms(&token))
    };
    respond_page(status, "Intag", Some(v), body)
}

/// `GET /console/intake`.
pub(crate) async fn form(
    State(state): State<AppState>,
    Staff(v, _): Staff<AsIntake>,
) -> Result<Response, PageError> {
    Ok(intake_page(
        &state,
        &v,
        &defaults(&state),
        &[],
        StatusCode::OK,
    ))
}

/// `POST /console/intake/consents`: validate, sign as issuer `console`,
/// record through `POST /v1/consents`'s handler.
pub(crate) async fn record(
    State(state): State<AppState>,
    rid: Rid,
    Posted(v, pairs, _): Posted<AsIntake>,
) -> Result<Response, PageError> {
    let f = Filled::from_pairs(&pairs);
    let mut errs = Vec::new();
    let pnr = pnr_field(&state, &pairs).map_err(|e| errs.push(e)).ok();
    check_choices(&f, &mut errs);
    let now = state.clock.now();
    let exp = expiry(&state, &f.valid_until, now, &mut errs);
    let given_by = given_by(&f, &mut errs);
    let (Some(pnr), Some(exp), true) = (pnr, exp, errs.is_empty()) else {
        return Ok(intake_page(
            &state,
            &v,
            &f,
            &errs,
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    };
    let Some((signer, kid)) = state.console.signer() else {
        errs.push(
            "Konsolen har ingen signeringsnyckel ([console] signing_key). Kontakta förvaltningen."
                .into(),
        );
        return Ok(intake_page(
            &state,
            &v,
            &f,
            &errs,
            StatusCode::SERVICE_UNAVAILABLE,
        ));
    };
    let claims = claims(&f, &pnr, exp, now.unix_timestamp(), &v.user.id, given_by);
    let token = signer.sign(kid, &claims).map_err(|_| super::internal())?;
    drop(claims);
    let body = api_body(json!({ "token": token }), true)?;
    match crate::consent::api::record(State(state.clone()), v.principal.clone(), rid, body).await {
        Ok(rsp) => {
            let summary = json_of(rsp).await?;
            let id = summary
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if uuid::Uuid::parse_str(&id).is_err() {
                return Err(super::internal());
            }
            Ok(Redirect::to(&format!("/console/intake/consents/{id}")).into_response())
        }
        Err(e) => {
            let mut msg = labels::problem(e.code.as_str()).to_owned();
            if e.code == crate::error::ProblemCode::InvalidConsentClaims {
                msg.push_str(&format!(" Detalj: {}", e.detail));
            }
            errs.push(msg);
            Ok(intake_page(&state, &v, &f, &errs, e.code.status()))
        }
    }
}

impl Filled {
    /// The form's fields as posted.
    fn from_pairs(pairs: &[(String, String)]) -> Filled {
        let owned =
            |k: &str| -> Vec<String> { all(pairs, k).into_iter().map(str::to_owned).collect() };
        Filled {
            parties: owned("parties"),
            purposes: owned("purposes"),
            categories: owned("categories"),
            method: first(pairs, "method").unwrap_or("").to_owned(),
            valid_until: first(pairs, "valid_until").unwrap_or("").trim().to_owned(),
            given_by_role: first(pairs, "given_by_role").unwrap_or("").to_owned(),
            given_by_name: first(pairs, "given_by_name")
                .unwrap_or("")
                .trim()
                .to_owned(),
            // A checkbox is sent only when ticked; any value counts as ticked,
            // so that a mangled form errs towards the marking.
            protected_identity: first(pairs, "protected_identity").is_some(),
        }
    }
}

/// The choices a consent needs: two parties, a purpose, a category and
/// how it was given.
fn check_choices(f: &Filled, errs: &mut Vec<String>) {
    if f.parties.len() < 2 {
        errs.push("Välj minst två parter som får dela uppgifter med varandra.".into());
    }
    if f.purposes.is_empty() {
        errs.push("Välj minst ett ändamål.".into());
    }
    if f.categories.is_empty() {
        errs.push("Välj minst en sorts uppgifter som får delas.".into());
    }
    if !labels::METHODS.iter().any(|(k, _)| *k == f.method) {
        errs.push("Välj hur samtycket lämnades.".into());
    }
}

/// The end of the consent's last day (Unix seconds), if `valid_until` is a
/// date from today within `[consent] max_lifetime_days`.
fn expiry(
    state: &AppState,
    valid_until: &str,
    now: time::OffsetDateTime,
    errs: &mut Vec<String>,
) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(valid_until, &fmt) {
        Err(_) => {
            errs.push("Fyll i till och med vilket datum samtycket gäller (ÅÅÅÅ-MM-DD).".into());
            None
        }
        Ok(d) if d < now.date() => {
            errs.push(
                "Giltighetstiden har redan gått ut. Välj ett slutdatum från och med i dag.".into(),
            );
            None
        }
        Ok(d) => {
            let end = d
                .with_hms(23, 59, 59)
                .map(|t| t.assume_utc().unix_timestamp());
            let max =
                i64::try_from(state.config.consent.max_lifetime.as_secs()).unwrap_or(i64::MAX);
            match end {
                Ok(end) if end - now.unix_timestamp() <= max => Some(end),
                _ => {
                    errs.push(format!(
                        "Samtycket får gälla högst {} dagar. Välj ett tidigare slutdatum.",
                        max / 86_400
                    ));
                    None
                }
            }
        }
    }
}

/// The representative who gave the consent, if named (both a valid role
/// and a name, or neither).
fn given_by(f: &Filled, errs: &mut Vec<String>) -> Option<Value> {
    if f.given_by_role.is_empty() {
        if !f.given_by_name.is_empty() {
            errs.push("Välj företrädarens roll, eller töm namnfältet.".into());
        }
        None
    } else if !labels::GIVEN_BY.iter().any(|(k, _)| *k == f.given_by_role) {
        errs.push("Välj en giltig roll för företrädaren.".into());
        None
    } else if f.given_by_name.is_empty() || f.given_by_name.chars().count() > 200 {
        errs.push("Fyll i företrädarens namn (högst 200 tecken).".into());
        None
    } else {
        Some(json!({"role": f.given_by_role, "name": f.given_by_name}))
    }
}

/// The claims of the consent token the console signs as issuer `console`.
fn claims(
    f: &Filled,
    pnr: &Personnummer,
    exp: i64,
    iat: i64,
    recorded_by: &str,
    given_by: Option<Value>,
) -> Value {
    let mut claims = json!({
        "jti": uuid::Uuid::new_v4().to_string(),
        "iss": CONSOLE_ISSUER_ID,
        "aud": "samgate",
        "sub": pnr.expose(),
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "parties": f.parties,
        "purposes": f.purposes,
        "categories": f.categories,
        "method": f.method,
        "recorded_by": recorded_by,
    });
    if let (Some(g), Some(obj)) = (given_by, claims.as_object_mut()) {
        obj.insert("given_by".into(), g);
    }
    // As `samgate consent sign --protected-identity`: the claim only when set.
    if let (true, Some(obj)) = (f.protected_identity, claims.as_object_mut()) {
        obj.insert("protected_identity".into(), Value::Bool(true));
    }
    claims
}

/// The consent summary in a definition list.
fn summary_list(state: &AppState, s: &Value) -> Markup {
    let list = |k: &str| strings(&s[k]);
    let st = s["state"].as_str().unwrap_or("");
    let closure = s.get("closure").filter(|c| c.is_object());
    let purposes = list("purposes");
    html! {
        dl class="summary" {
            dt { "Status" } dd { strong class={"state state-" (st)} { (labels::state(st)) } }
            dt { "Samtyckets id" } dd { code { (s["id"].as_str().unwrap_or("")) } }
            dt { "Parter" } dd { ul { @for p in list("parties") { li { (party_name(state, &p)) } } } }
            dt { "Ändamål" } dd { ul { @for p in &purposes { li { (labels::purpose_after(p, closure.is_some())) } } } }
            @if let Some(c) = closure {
                dt { "Avslut" } dd { (labels::closure(
                    &date_of(c["closed_at"].as_str().unwrap_or("")),
                    &date_of(c["follow_up_until"].as_str().unwrap_or("")),
                    purposes.iter().any(|p| p == crate::consent::lifecycle::FOLLOW_UP_PURPOSE),
                )) }
            }
            dt { "Uppgifter" } dd { ul { @for c in list("categories") { li { (labels::category_code(&c)) } } } }
            @if s["protected_identity"].as_bool() == Some(true) {
                dt { "Skyddade personuppgifter" } dd { (labels::PROTECTED_IDENTITY) }
            }
            dt { "Hur det lämnades" } dd { (labels::method(s["method"].as_str().unwrap_or(""))) }
            @if let Some(g) = s.get("given_by").filter(|g| g.is_object()) {
                dt { "Lämnat av" } dd { (labels::given_by(g["role"].as_str().unwrap_or(""))) ": " (g["name"].as_str().unwrap_or("")) }
            }
            dt { "Registrerat av" } dd { (user_name(state, s["recorded_by"].as_str().unwrap_or(""))) }
            dt { "Registrerat" } dd { (when(s["recorded_at"].as_str().unwrap_or(""))) }
            dt { "Giltigt" } dd { (date_of(s["not_before"].as_str().unwrap_or(""))) " – " (date_of(s["expires_at"].as_str().unwrap_or(""))) }
            @if let Some(r) = s["revoked_at"].as_str() {
                dt { "Återkallat" } dd { (when(r)) }
            }
        }
    }
}

fn uuid_path(id: &str) -> Result<(), PageError> {
    uuid::Uuid::parse_str(id).map(|_| ()).map_err(|_| {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Samtycket finns inte",
            "Det finns inget samtycke med det id:t.",
        )
    })
}

/// Reads a consent's summary through `GET /v1/consents/{id}`'s handler.
pub(crate) async fn summary(
    state: &AppState,
    v: &Viewer,
    rid: Rid,
    id: &str,
) -> Result<Value, PageError> {
    uuid_path(id)?;
    match crate::consent::api::get(
        State(state.clone()),
        v.principal.clone(),
        rid,
        Path(id.to_owned()),
    )
    .await
    {
        Ok(rsp) => {
            let mut s = json_of(rsp).await?;
            if s.get("given_by").is_none() {
                let g = super::receipt::given_by_of_token(state, id).await;
                if let Some(obj) = s.as_object_mut() {
                    obj.insert("given_by".into(), g.unwrap_or(Value::Null));
                }
            }
            Ok(s)
        }
        Err(e) if e.code == crate::error::ProblemCode::NotFound => Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Samtycket finns inte",
            "Det finns inget samtycke med det id:t.",
        )),
        Err(e) => Err(PageError::from_api(&e)),
    }
}

fn consent_page(
    state: &AppState,
    v: &Viewer,
    s: &Value,
    errs: &[String],
    status: StatusCode,
) -> Response {
    let id = s["id"].as_str().unwrap_or("");
    let token = csrf(state, v);
    let body = html! {
        (summary_list(state, s))
        p class="actions" {
            a href={"/console/intake/consents/" (id) "/receipt"} { "Kvitto på samtycket (för utskrift)" }
        }
        @if s["revoked_at"].is_null() {
            section aria-labelledby="revoke" {
                h2 id="revoke" { "Återkalla samtycket" }
                p { "Deltagaren kan när som helst ta tillbaka sitt samtycke. Det gäller för alla utbyten som börjar efter att du har tryckt på knappen." }
                (errors(errs))
                form method="post" action={"/console/intake/consents/" (id) "/revocation"} class="stack" novalidate {
                    (csrf_field(&token))
                    div class="field" {
                        label for="reason" { "Skäl" }
                        span class="hint" id="reason-hint" { "Till exempel: deltagaren ringde och återkallade samtycket." }
                        textarea id="reason" name="reason" rows="3" required aria-describedby="reason-hint" {}
                    }
                    p { button type="submit" class="danger" { "Återkalla samtycket" } }
                }
            }
        }
        p { a href="/console/intake" { "Tillbaka till intaget" } }
    };
    respond_page(status, "Samtycke", Some(v), body)
}

/// `GET /console/intake/consents/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    rid: Rid,
    Path(id): Path<String>,
    Staff(v, _): Staff<AsIntake>,
) -> Result<Response, PageError> {
    let s = summary(&state, &v, rid, &id).await?;
    Ok(consent_page(&state, &v, &s, &[], StatusCode::OK))
}

/// `POST /console/intake/consents/{id}/revocation`: through the API's
/// revocation handler.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    rid: Rid,
    Path(id): Path<String>,
    Posted(v, pairs, _): Posted<AsIntake>,
) -> Result<Response, PageError> {
    uuid_path(&id)?;
    let reason = first(&pairs, "reason").unwrap_or("").trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        let s = summary(&state, &v, rid, &id).await?;
        return Ok(consent_page(
            &state,
            &v,
            &s,
            &["Skriv varför samtycket återkallas (högst 500 tecken).".into()],
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    let raw = serde_json::to_vec(&json!({ "reason": reason })).map_err(|_| super::internal())?;
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("/v1/consents/{id}/revocation"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, raw.len())
        .body(Body::from(raw))
        .map_err(|_| super::internal())?;
    if let Some(Extension(r)) = rid {
        req.extensions_mut().insert(r);
    }
    match crate::consent::api::revoke(
        State(state.clone()),
        v.principal.clone(),
        Path(id.clone()),
        req,
    )
    .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/console/intake/consents/{id}")).into_response()),
        Err(e) => Err(PageError::from_api(&e)),
    }
}

/// `POST /console/intake/search`: the participant's consents.
pub(crate) async fn search(
    State(state): State<AppState>,
    rid: Rid,
    Posted(v, pairs, _): Posted<AsIntake>,
) -> Result<Response, PageError> {
    let pnr = match pnr_field(&state, &pairs) {
        Ok(p) => p,
        Err(e) => return Ok(lookup_refused(&state, &v, "Sök samtycken", e)),
    };
    let forms = state
        .crypto
        .consent_pseudonym(&pnr)
        .and_then(|c| Ok((c, state.crypto.audit_pseudonym(&pnr)?)));
    let (subject, audit_subject) =
        forms.map_err(|e| PageError::from_api(&crate::error::ApiError::internal(e)))?;
    // Looking up whether a person is a participant is itself a disclosure:
    // it is logged like the auditor's subject search and the extract.
    crate::audit::access::log_query(
        &state,
        &v.principal,
        rid,
        crate::audit::record::Action::AuditQuery,
        "console intake consent search".to_owned(),
        Some(&audit_subject),
    )
    .await
    .map_err(|e| PageError::from_api(&e))?;
    drop(pnr);
    let rows = crate::consent::model::for_subject(&state.store, subject.as_str())
        .await
        .map_err(|_| PageError::from_api(&crate::error::ApiError::unavailable("storage")))?;
    let now_us = state.clock.now_us();
    // The marking is the person's (DESIGN §13): on every consent if on any.
    let protected = rows.iter().any(|r| r.protected_identity);
    let summaries: Vec<Value> = rows
        .into_iter()
        .map(|mut r| {
            r.protected_identity |= protected;
            r
        })
        .filter_map(|r| serde_json::to_value(r.summary(now_us)).ok())
        .collect();
    let body = html! {
        @if summaries.is_empty() {
            p role="status" { "Det finns inga samtycken registrerade för deltagaren." }
        } @else {
            p role="status" { "Deltagaren har " (summaries.len()) " registrerade samtycken, det senaste först." }
            table {
                caption { "Deltagarens samtycken" }
                thead { tr { th scope="col" { "Registrerat" } th scope="col" { "Status" } th scope="col" { "Parter" } th scope="col" { "Giltigt till" } th scope="col" { "Samtycke" } } }
                tbody {
                    @for s in &summaries {
                        @let id = s["id"].as_str().unwrap_or("");
                        @let st = s["state"].as_str().unwrap_or("");
                        tr {
                            td { (when(s["recorded_at"].as_str().unwrap_or(""))) }
                            td { (labels::state(st)) }
                            td { @for (i, p) in s["parties"].as_array().cloned().unwrap_or_default().iter().enumerate() { @if i > 0 { ", " } (party_name(&state, p.as_str().unwrap_or(""))) } }
                            td { (date_of(s["expires_at"].as_str().unwrap_or(""))) }
                            td { a href={"/console/intake/consents/" (id)} { "Öppna samtycket " span class="visually-hidden" { "registrerat " (when(s["recorded_at"].as_str().unwrap_or(""))) } } }
                        }
                    }
                }
            }
        }
        p { a href="/console/intake" { "Tillbaka till intaget" } }
    };
    Ok(respond(layout("Sökresultat: samtycken", Some(&v), body)))
}

/// `GET /console/intake/consents/{id}/receipt`: the printable receipt.
pub(crate) async fn receipt(
    State(state): State<AppState>,
    rid: Rid,
    Path(id): Path<String>,
    Staff(v, _): Staff<AsIntake>,
) -> Result<Response, PageError> {
    let r = super::receipt::build(&state, &v, rid, &id).await?;
    Ok(respond(layout(
        "Kvitto på samtycke",
        Some(&v),
        super::receipt::render(&r),
    )))
}

/// `POST /console/intake/extract`: the register extract (GDPR art. 15)
/// through `POST /v1/disclosures`'s handler.
pub(crate) async fn extract(
    State(state): State<AppState>,
    rid: Rid,
    Posted(v, pairs, _): Posted<AsIntake>,
) -> Result<Response, PageError> {
    let pnr = match pnr_field(&state, &pairs) {
        Ok(p) => p,
        Err(e) => return Ok(lookup_refused(&state, &v, "Registerutdrag", e)),
    };
    let body = api_body(json!({ "personnummer": pnr.expose() }), false)?;
    drop(pnr);
    let rsp =
        crate::audit::disclosure::disclosures(State(state.clone()), v.principal.clone(), rid, body)
            .await
            .map_err(|e| PageError::from_api(&e))?;
    let out = json_of(rsp).await?;
    let items = array_at(&out, "disclosures");
    let today = state.clock.now().date();
    let body = html! {
        div class="printable" {
            p { "Utdraget är gjort " (today) " av " (v.user.name) ", " (v.party_name) ". Det visar varje gång samgate har hanterat uppgifter om dig: när, från vem, till vem, vilken sorts uppgifter, vilka fält och under vilket samtycke." }
            @if items.is_empty() {
                p role="status" { "Inga uppgifter om dig har lämnats ut genom samgate." }
            } @else {
                ol class="extract" {
                    @for d in &items { li { (extract_line(&state, d)) } }
                }
            }
            p class="small" { "Personuppgiftsansvariga är de parter som nämns. Du har rätt att begära rättelse och att återkalla ditt samtycke." }
        }
        p class="no-print" { button type="button" data-print="" { "Skriv ut" } " " a href="/console/intake" { "Tillbaka till intaget" } }
    };
    Ok(respond(layout("Registerutdrag", Some(&v), body)))
}

/// One exchange in plain Swedish.
fn extract_line(state: &AppState, d: &Value) -> Markup {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    let from = party_name(state, &s("from"));
    let to = party_name(state, &s("to"));
    let fields: Vec<String> = strings(&d["forwarded"])
        .iter()
        .map(|f| labels::field(f))
        .collect();
    let kind = labels::msg_type(&s("type"));
    let decision = s("decision");
    let denied = decision == "deny" || decision == "failed" || decision == "expired";
    html! {
        strong { (date_of(&s("time"))) } ": "
        @if denied {
            (from) " ville lämna " (kind.to_lowercase()) " till " (to) ", men det stoppades (" (labels::decision(&decision).to_lowercase()) "). Inga uppgifter lämnades ut."
        } @else {
            (from) " lämnade " (kind.to_lowercase()) " till " (to) ". "
            @if fields.is_empty() { "Inga fält lämnades ut." } @else { "Uppgifter: " (fields.join(", ")) "." }
        }
        @if let Some(c) = d["consent_id"].as_str() {
            " " span class="small" { "Samtycke: " code { (c) } }
        }
    }
}
