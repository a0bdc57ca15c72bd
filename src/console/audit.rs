//! Audit pages (DESIGN §11): the records with the API's filters and cursor
//! paging, a record page whose script verifies the inclusion proof and the
//! checkpoint signature in the browser, the tree-head history, subject
//! search by POST with a stated reason, and the export download. Each calls
//! the API handler it mirrors, so each is an `audit-query` record too.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use serde_json::{json, Value};

use super::intake::pnr_field;
use super::page::{csrf_field, errors, layout, respond, respond_page};
use super::{
    api_body, array_at, csrf, first, json_of, labels, party_name, user_name, when, AsAuditor,
    PageError, Posted, Staff, Viewer,
};
use crate::audit::access::Auditor;
use crate::audit::api::has_long_number;
use crate::audit::query::Cursor;
use crate::audit::record::{Action, Decision};
use crate::http::extract::RequestId;
use crate::state::AppState;

type Rid = Option<Extension<RequestId>>;

/// The console's filter fields (dates as `YYYY-MM-DD`).
const FILTERS: [&str; 6] = ["from", "to", "party", "type", "action", "decision"];

fn day(s: &str) -> Option<time::Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt).ok()
}

/// The API query of the console's filters (`to` is inclusive here).
fn api_params(q: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for k in FILTERS {
        let Some(v) = q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            continue;
        };
        let v = match k {
            "from" => format!(
                "{}T00:00:00Z",
                day(v).ok_or("Datumet ”från” ska skrivas ÅÅÅÅ-MM-DD.")?
            ),
            "to" => format!(
                "{}T00:00:00Z",
                day(v)
                    .ok_or("Datumet ”till” ska skrivas ÅÅÅÅ-MM-DD.")?
                    .next_day()
                    .ok_or("Datumet ”till” är för långt fram.")?
            ),
            _ => v.to_owned(),
        };
        out.insert(k.to_owned(), v);
    }
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        out.insert("cursor".into(), c.clone());
    }
    Ok(out)
}

/// Calls `GET /v1/audit/records`'s handler.
async fn fetch_records(
    state: &AppState,
    v: &Viewer,
    rid: Rid,
    params: BTreeMap<String, String>,
) -> Result<Value, crate::error::ApiError> {
    let p: crate::audit::api::RecordsParams = serde_json::from_value(json!(params))
        .map_err(|_| crate::audit::error::AuditRequestError::UnknownFilter)?;
    let auditor = Auditor::new(state.clone(), v.principal.clone(), rid)?;
    let rsp = crate::audit::api::records(auditor, Ok(Query(p))).await?;
    json_of(rsp)
        .await
        .map_err(|_| crate::error::ApiError::internal("records answer"))
}

fn records_table(state: &AppState, records: &[Value], caption: &str) -> Markup {
    let s = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_owned();
    html! {
        table {
            caption { (caption) }
            thead { tr {
                th scope="col" { "Nr" } th scope="col" { "Tid" } th scope="col" { "Händelse" }
                th scope="col" { "Från" } th scope="col" { "Till" } th scope="col" { "Typ" }
                th scope="col" { "Beslut" } th scope="col" { "Orsak" }
            } }
            tbody {
                @for r in records {
                    @let seq = r["seq"].as_u64().unwrap_or(0);
                    tr {
                        td { a href={"/console/audit/records/" (seq)} { (seq) } }
                        td { (when(&s(r, "time"))) }
                        td { (labels::action(&s(r, "action"))) }
                        td { @if let Some(p) = r["from"].as_str() { (party_name(state, p)) } }
                        td { @if let Some(p) = r["to"].as_str() { (party_name(state, p)) } }
                        td { @if let Some(t) = r["type"].as_str() { (labels::msg_type(t)) } }
                        td { (labels::decision(&s(r, "decision"))) }
                        td { @if let Some(x) = r["reason"].as_str() { code { (x) } } }
                    }
                }
            }
        }
    }
}

fn filter_form(state: &AppState, q: &BTreeMap<String, String>) -> Markup {
    let val = |k: &str| q.get(k).cloned().unwrap_or_default();
    let sel = |k: &str, v: &str| q.get(k).is_some_and(|x| x == v);
    html! {
        form method="get" action="/console/audit" class="filters" {
            div class="field" { label for="f-from" { "Från och med" } input type="date" id="f-from" name="from" value=(val("from")); }
            div class="field" { label for="f-to" { "Till och med" } input type="date" id="f-to" name="to" value=(val("to")); }
            div class="field" {
                label for="f-party" { "Part" }
                select id="f-party" name="party" {
                    option value="" { "Alla" }
                    @for p in &state.live().config.parties { option value=(p.id) selected[sel("party", p.id.as_str())] { (p.name) } }
                }
            }
            div class="field" {
                label for="f-type" { "Typ" }
                select id="f-type" name="type" {
                    option value="" { "Alla" }
                    @for t in crate::schema::KNOWN_TYPES.iter() { option value=(t) selected[sel("type", t)] { (labels::msg_type(t)) } }
                }
            }
            div class="field" {
                label for="f-action" { "Händelse" }
                select id="f-action" name="action" {
                    option value="" { "Alla" }
                    @for a in Action::ALL.map(Action::as_str) { option value=(a) selected[sel("action", a)] { (labels::action(a)) } }
                }
            }
            div class="field" {
                label for="f-decision" { "Beslut" }
                select id="f-decision" name="decision" {
                    option value="" { "Alla" }
                    @for d in Decision::ALL.map(Decision::as_str) { option value=(d) selected[sel("decision", d)] { (labels::decision(d)) } }
                }
            }
            p { button type="submit" { "Visa" } }
        }
    }
}

/// `GET /console/audit`: records with filters and paging.
pub(crate) async fn records(
    State(state): State<AppState>,
    Staff(v, _): Staff<AsAuditor>,
    rid: Rid,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (page, errs) = match api_params(&q) {
        Err(e) => (None, vec![e]),
        Ok(params) => match fetch_records(&state, &v, rid, params).await {
            Ok(p) => (Some(p), Vec::new()),
            Err(e) => (
                None,
                vec![format!(
                    "{} ({})",
                    labels::problem(e.code.as_str()),
                    e.detail
                )],
            ),
        },
    };
    let records = page
        .as_ref()
        .map(|p| array_at(p, "records"))
        .unwrap_or_default();
    let next = page
        .as_ref()
        .and_then(|p| p["next_cursor"].as_str().map(str::to_owned));
    let next_href = next.map(|c| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for k in FILTERS {
            if let Some(v) = q.get(k).filter(|v| !v.is_empty()) {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("cursor", &c);
        format!("/console/audit?{}", ser.finish())
    });
    let body = html! {
        p { "Varje post är en händelse i den manipuleringssäkra loggen. Öppna en post för att kontrollera den i webbläsaren. Även den här sökningen blir en post." }
        (filter_form(&state, &q))
        (errors_box(&errs))
        @if page.is_some() {
            @if records.is_empty() {
                p role="status" { "Inga poster matchar." }
            } @else {
                (records_table(&state, &records, "Loggposter"))
            }
        }
        p class="actions" {
            @if let Some(h) = next_href { a href=(h) rel="next" { "Nästa sida" } " · " }
            a href="/console/audit" { "Från början" } " · "
            a href="/console/audit/export" download="" { "Ladda ner hela loggen (NDJSON)" }
        }
    };
    Ok(respond(layout("Granskning: loggen", Some(&v), body)))
}

fn errors_box(errs: &[String]) -> Markup {
    html! {
        @if !errs.is_empty() {
            div class="error" role="alert" { ul { @for e in errs { li { (e) } } } }
        }
    }
}

const FIELD_LABELS: [(&str, &str); 19] = [
    ("seq", "Nummer"),
    ("time", "Tid"),
    ("action", "Händelse"),
    ("decision", "Beslut"),
    ("reason", "Orsak"),
    ("actor_party", "Utförd av part"),
    ("actor_user", "Utförd av person"),
    ("from", "Från"),
    ("to", "Till"),
    ("type", "Typ"),
    ("purpose", "Ändamål"),
    ("subject", "Deltagarens kod (pseudonym)"),
    ("consent_id", "Samtycke"),
    ("exchange_id", "Utbyte"),
    ("forwarded", "Vidarebefordrade fält"),
    ("withheld", "Undanhållna fält"),
    ("payload_sha256", "Innehållets kontrollsumma (SHA-256)"),
    ("request_id", "Förfrågans id"),
    ("leaf_hash", "Postens hash"),
];

fn field_value(state: &AppState, k: &str, v: &Value) -> Markup {
    match (k, v) {
        (_, Value::Null) => html! { span class="muted" { "–" } },
        ("action", Value::String(s)) => html! { (labels::action(s)) " " code { (s) } },
        ("decision", Value::String(s)) => html! { (labels::decision(s)) },
        ("type", Value::String(s)) => html! { (labels::msg_type(s)) },
        ("purpose", Value::String(s)) => html! { (labels::purpose(s)) },
        ("time", Value::String(s)) => html! { (when(s)) },
        ("from" | "to" | "actor_party", Value::String(s)) => html! { (party_name(state, s)) },
        ("actor_user", Value::String(s)) => html! { (user_name(state, s)) " (" (s) ")" },
        (_, Value::Array(a)) if a.is_empty() => html! { span class="muted" { "inga" } },
        (_, Value::Array(a)) => html! {
            ul { @for x in a { li { (labels::field(x.as_str().unwrap_or(""))) " " code { (x.as_str().unwrap_or("")) } } } }
        },
        (_, Value::String(s)) => html! { code { (s) } },
        (_, other) => html! { code { (other.to_string()) } },
    }
}

/// `GET /console/audit/records/{seq}`: one record; `record.js` fetches the
/// inclusion proof, the tree head and the audit key and checks both the
/// proof and the checkpoint signature with WebCrypto.
pub(crate) async fn record(
    State(state): State<AppState>,
    rid: Rid,
    Path(seq): Path<String>,
    Staff(v, _): Staff<AsAuditor>,
) -> Result<Response, PageError> {
    let missing = || {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Posten finns inte",
            "Det finns ingen post med det numret.",
        )
    };
    let seq: u64 = seq
        .parse()
        .ok()
        .filter(|s| *s >= 1 && *s < u64::MAX)
        .ok_or_else(missing)?;
    let cursor = Cursor {
        after: seq - 1,
        until: seq,
    };
    let mut params = BTreeMap::new();
    params.insert("cursor".to_owned(), cursor.encode());
    params.insert("limit".to_owned(), "1".to_owned());
    let page = fetch_records(&state, &v, rid, params)
        .await
        .map_err(|e| PageError::from_api(&e))?;
    let r = page
        .get("records")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .filter(|r| r["seq"].as_u64() == Some(seq))
        .cloned()
        .ok_or_else(missing)?;
    let leaf = r
        .get("leaf")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let body = html! {
        dl class="summary" {
            @for (k, label) in FIELD_LABELS {
                @if let Some(val) = r.get(k) {
                    dt { (label) } dd { (field_value(&state, k, val)) }
                }
            }
        }
        section id="verify" aria-labelledby="verify-h" data-seq=(seq) data-leaf=(leaf) {
            h2 id="verify-h" { "Kontroll i webbläsaren" }
            p { "Webbläsaren hämtar själv postens inkluderingsbevis, det senaste signerade trädhuvudet och granskningsnyckeln, och räknar efter med WebCrypto (SHA-256 och Ed25519). Servern tillfrågas inte om resultatet." }
            p id="verify-status" class="status pending" role="status" aria-live="polite" { "Kontrollen har inte körts (JavaScript krävs)." }
            ol id="verify-steps" {}
            p { button type="button" id="verify-again" { "Kontrollera igen" } }
        }
        p { a href="/console/audit" { "Tillbaka till loggen" } }
        script src="/console/assets/record.js" defer {}
    };
    Ok(respond(layout(&format!("Loggpost {seq}"), Some(&v), body)))
}

/// `GET /console/audit/tree-heads`: every signed tree head, newest first.
pub(crate) async fn tree_heads(
    State(state): State<AppState>,
    Staff(v, _): Staff<AsAuditor>,
    rid: Rid,
) -> Result<Response, PageError> {
    crate::audit::access::log_query(
        &state,
        &v.principal,
        rid,
        Action::AuditQuery,
        "tree-head history".into(),
        None,
    )
    .await
    .map_err(|e| PageError::from_api(&e))?;
    let mut heads = crate::audit::query::all_heads(&state.store)
        .await
        .map_err(|_| PageError::from_api(&crate::error::ApiError::unavailable("storage")))?;
    heads.reverse();
    let shown = heads.len().min(500);
    let body = html! {
        p { "Gatewayen signerar regelbundet ett trädhuvud: loggens storlek och rothash. Ett senare huvud måste alltid innehålla ett tidigare." }
        p role="status" { (heads.len()) " trädhuvuden" @if shown < heads.len() { ", de " (shown) " senaste visas" } "." }
        table {
            caption { "Signerade trädhuvuden, det senaste först" }
            thead { tr { th scope="col" { "Storlek" } th scope="col" { "Tid" } th scope="col" { "Rothash" } } }
            tbody {
                @for h in heads.iter().take(shown) {
                    tr { td { (h.tree_size) } td { (when(&crate::clock::rfc3339_us(h.time_us))) } td { code class="hash" { (hex::encode(h.root_hash)) } } }
                }
            }
        }
    };
    Ok(respond(layout("Trädhuvuden", Some(&v), body)))
}

fn search_page(
    state: &AppState,
    v: &Viewer,
    errs: &[String],
    results: Option<Markup>,
    status: StatusCode,
) -> Response {
    let token = csrf(state, v);
    let body = html! {
        p { "Sök alla poster om en deltagare. Sökningen och skälet sparas i loggen som en granskningsfråga. Numret skickas bara i formuläret och visas aldrig igen." }
        (errors(errs))
        form method="post" action="/console/audit/subject-search" class="stack" novalidate {
            (csrf_field(&token))
            div class="field" {
                label for="pnr-audit" { "Personnummer eller samordningsnummer" }
                input type="text" id="pnr-audit" name="personnummer" required autocomplete="off" inputmode="numeric" spellcheck="false";
            }
            div class="field" {
                label for="reason" { "Skäl till sökningen (krävs)" }
                span class="hint" id="reason-hint" { "Till exempel ärendets diarienummer eller uppdraget. Skriv inga personnummer." }
                input type="text" id="reason" name="reason" required maxlength="200" aria-describedby="reason-hint";
            }
            p { button type="submit" { "Sök" } }
        }
        @if let Some(r) = results { (r) }
    };
    respond_page(status, "Sök poster om en deltagare", Some(v), body)
}

/// `GET /console/audit/subject-search`.
pub(crate) async fn search_form(
    State(state): State<AppState>,
    Staff(v, _): Staff<AsAuditor>,
) -> Result<Response, PageError> {
    Ok(search_page(&state, &v, &[], None, StatusCode::OK))
}

/// `POST /console/audit/subject-search`: through the API's subject search,
/// with the reason.
pub(crate) async fn search(
    State(state): State<AppState>,
    rid: Rid,
    Posted(v, pairs, _): Posted<AsAuditor>,
) -> Result<Response, PageError> {
    let mut errs = Vec::new();
    let pnr = pnr_field(&state, &pairs).map_err(|e| errs.push(e)).ok();
    let reason = first(&pairs, "reason").unwrap_or("").trim().to_owned();
    if reason.is_empty() {
        errs.push("Ange ett skäl till sökningen. Skälet sparas i loggen.".into());
    } else if reason.chars().count() > 200 {
        errs.push("Skälet får vara högst 200 tecken.".into());
    } else if has_long_number(&reason) {
        errs.push("Skälet får inte innehålla personnummer eller andra långa nummer.".into());
    }
    let (Some(pnr), true) = (pnr, errs.is_empty()) else {
        return Ok(search_page(
            &state,
            &v,
            &errs,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    };
    let body = api_body(
        json!({ "personnummer": pnr.expose(), "reason": reason }),
        false,
    )?;
    drop(pnr);
    match crate::audit::api::subject_search(State(state.clone()), v.principal.clone(), rid, body)
        .await
    {
        Ok(rsp) => {
            let out = json_of(rsp).await?;
            let records = array_at(&out, "records");
            let more = out.get("next_cursor").is_some_and(|c| !c.is_null());
            let results = html! {
                @if records.is_empty() {
                    p role="status" { "Inga poster om deltagaren." }
                } @else {
                    p role="status" { (records.len()) " poster om deltagaren" @if more { " (de första visas)" } "." }
                    (records_table(&state, &records, "Poster om deltagaren"))
                }
            };
            Ok(search_page(&state, &v, &[], Some(results), StatusCode::OK))
        }
        Err(e) => Ok(search_page(
            &state,
            &v,
            &[labels::problem(e.code.as_str()).to_owned()],
            None,
            e.code.status(),
        )),
    }
}

/// `GET /console/audit/export`: the API's NDJSON export as a download.
pub(crate) async fn export(
    State(state): State<AppState>,
    Staff(v, _): Staff<AsAuditor>,
    rid: Rid,
    q: Result<Query<crate::audit::export::ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let page_error = |e: crate::error::ApiError| PageError::from_api(&e);
    let auditor = Auditor::new(state.clone(), v.principal.clone(), rid).map_err(page_error)?;
    let mut rsp = crate::audit::export::export(auditor, q)
        .await
        .map_err(page_error)?;
    let name = format!(
        "attachment; filename=\"samgate-{}-{}.ndjson\"",
        state.config.server.deployment_id,
        state.clock.now().date()
    );
    if let Ok(h) = HeaderValue::from_str(&name) {
        rsp.headers_mut().insert(header::CONTENT_DISPOSITION, h);
    }
    Ok(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_are_found_in_reasons() {
        assert!(has_long_number("ärende 19900101-1234"));
        assert!(has_long_number("900101 1234"));
        assert!(!has_long_number("Dnr 2026/123, uppdrag 7"));
        assert!(!has_long_number("revision 2026"));
    }

    #[test]
    fn filters_become_api_params() {
        let mut q = BTreeMap::new();
        q.insert("from".to_owned(), "2026-12-01".to_owned());
        q.insert("to".to_owned(), "2026-12-31".to_owned());
        q.insert("party".to_owned(), "af".to_owned());
        q.insert("type".to_owned(), String::new());
        let p = api_params(&q).unwrap();
        assert_eq!(p["from"], "2026-12-01T00:00:00Z");
        assert_eq!(p["to"], "2027-01-01T00:00:00Z");
        assert_eq!(p["party"], "af");
        assert!(!p.contains_key("type"));
        q.insert("from".to_owned(), "1 dec".to_owned());
        assert!(api_params(&q).is_err());
    }
}
