//! The auditor API (DESIGN §6, §9): records with filters and cursor pages,
//! subject search, the signed tree head, inclusion and consistency proofs (the
//! NDJSON export is in `export.rs`). Role `auditor` with a named user; every query is itself
//! an `audit-query` record, committed before the answer leaves.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::access::{log_query, Auditor};
use super::error::AuditRequestError;
use super::merkle::{Hash, NodeId};
use super::proof::{self, ProofError};
use super::query::{self, Cursor, Page, RecordFilter, DEFAULT_LIMIT, MAX_LIMIT};
use super::record::Action;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{JsonBody, RequestId};
use crate::party::Role;
use crate::state::AppState;
use crate::subject::personnummer::Personnummer;
use crate::subject::pseudonym::{Audit, Pseudonym};

/// `GET /v1/audit/records` query parameters (all text, parsed below so that
/// every error is a problem document).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RecordsParams {
    from: Option<String>,
    to: Option<String>,
    party: Option<String>,
    #[serde(rename = "type")]
    msg_type: Option<String>,
    action: Option<String>,
    decision: Option<String>,
    subject: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// `POST /v1/audit/subject-search` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectSearch {
    personnummer: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    /// Why the auditor searches (the console requires it); kept in the
    /// `audit-query` record, at most 200 characters.
    #[serde(default)]
    reason: Option<String>,
}

/// Proof query parameters.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProofParams {
    seq: Option<String>,
    tree_size: Option<String>,
    first: Option<String>,
    second: Option<String>,
}

impl ProofParams {
    /// The inclusion proof's `(seq, tree_size)`, refusing a consistency
    /// proof's parameters.
    fn inclusion(&self) -> Result<(u64, u64), AuditRequestError> {
        if self.first.is_some() || self.second.is_some() {
            return Err(AuditRequestError::InclusionParams);
        }
        Ok((
            required("seq", self.seq.as_deref())?,
            required("tree_size", self.tree_size.as_deref())?,
        ))
    }

    /// The consistency proof's `(first, second)`, refusing an inclusion
    /// proof's parameters.
    fn consistency(&self) -> Result<(u64, u64), AuditRequestError> {
        if self.seq.is_some() || self.tree_size.is_some() {
            return Err(AuditRequestError::ConsistencyParams);
        }
        Ok((
            required("first", self.first.as_deref())?,
            required("second", self.second.as_deref())?,
        ))
    }
}

pub(crate) fn params<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, AuditRequestError> {
    // The rejection text may quote values; it is not passed on.
    q.map(|Query(p)| p)
        .map_err(|_| AuditRequestError::QueryString)
}

/// A decimal number without sign or leading `+`.
pub(crate) fn number(
    name: &'static str,
    v: Option<&str>,
) -> Result<Option<u64>, AuditRequestError> {
    match v {
        None => Ok(None),
        Some(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map(Some)
            .map_err(|_| AuditRequestError::OutOfRange(name)),
        Some(_) => Err(AuditRequestError::NotANumber(name)),
    }
}

fn required(name: &'static str, v: Option<&str>) -> Result<u64, AuditRequestError> {
    number(name, v)?.ok_or(AuditRequestError::Required(name))
}

fn time_us(name: &'static str, v: Option<&str>) -> Result<Option<i64>, AuditRequestError> {
    v.map(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(crate::clock::to_us)
            .map_err(|_| AuditRequestError::NotATime(name))
    })
    .transpose()
}

/// An id-like filter value: a lowercase letter, then letters, digits, `-`,
/// `_` or `.`, at most 64, with at most four digits. (A personnummer never
/// passes, also not behind a letter, so no number reaches the log through
/// a filter.)
fn ident(name: &'static str, v: Option<String>) -> Result<Option<String>, AuditRequestError> {
    match v {
        None => Ok(None),
        Some(s)
            if s.len() <= 64
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)
                })
                && s.bytes().filter(u8::is_ascii_digit).count() <= 4 =>
        {
            Ok(Some(s))
        }
        Some(_) => Err(AuditRequestError::NotAnIdentifier(name)),
    }
}

/// The `party` filter: a configured party id as it is (ids are the
/// operator's, whatever their digits), anything else an [`ident`].
fn party_filter(auditor: &Auditor, v: Option<String>) -> Result<Option<String>, AuditRequestError> {
    match v {
        Some(s) if auditor.state.live().config.party(&s).is_some() => Ok(Some(s)),
        other => ident("party", other),
    }
}

fn limit(v: Option<u64>) -> Result<u64, AuditRequestError> {
    match v {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(AuditRequestError::Limit),
    }
}

fn cursor(v: Option<&str>) -> Result<Option<Cursor>, AuditRequestError> {
    v.map(|s| Cursor::decode(s).ok_or(AuditRequestError::Cursor))
        .transpose()
}

fn page_json(page: &Page) -> Value {
    let records: Vec<Value> = page.records.iter().map(query::record_json).collect();
    serde_json::json!({
        "records": records,
        "next_cursor": page.next.map(|c| c.encode()),
    })
}

/// `GET /v1/audit/records`.
pub async fn records(
    auditor: Auditor,
    q: Result<Query<RecordsParams>, QueryRejection>,
) -> ApiResult<Response> {
    let p = params(q)?;
    let subject = match p.subject {
        None => None,
        Some(s) => Some(
            Pseudonym::<Audit>::parse(&s).map_err(|_| AuditRequestError::SubjectNotPseudonym)?,
        ),
    };
    let filter = RecordFilter {
        from_us: time_us("from", p.from.as_deref())?,
        to_us: time_us("to", p.to.as_deref())?,
        party: party_filter(&auditor, p.party)?,
        msg_type: ident("type", p.msg_type)?,
        actions: ident("action", p.action)?.into_iter().collect(),
        decision: ident("decision", p.decision)?,
        subject: subject.as_ref().map(|s| s.as_str().to_owned()),
    };
    let limit = limit(number("limit", p.limit.as_deref())?)?;
    let cursor = cursor(p.cursor.as_deref())?;
    let page = query::records_page(&auditor.state.store, &filter, cursor, limit).await?;
    // The times as parsed and rendered again, never as sent (an RFC 3339
    // fraction can hold any digits, a personnummer too).
    let precise = |us: i64| crate::clock::rfc3339_precise(crate::clock::from_us(us));
    let from = filter.from_us.map(precise);
    let to = filter.to_us.map(precise);
    let mut reason = String::from("records");
    for (k, v) in [
        ("from", &from),
        ("to", &to),
        ("party", &filter.party),
        ("type", &filter.msg_type),
        ("action", &filter.actions.first().cloned()),
        ("decision", &filter.decision),
    ] {
        if let Some(v) = v {
            reason.push_str(&format!(" {k}={v}"));
        }
    }
    auditor.log(reason, subject.as_ref()).await?;
    Ok(Json(page_json(&page)).into_response())
}

/// Parses a personnummer from a request body: 422, never echoed.
pub(crate) fn personnummer(state: &AppState, s: &str) -> Result<Personnummer, AuditRequestError> {
    Personnummer::parse_at(s, state.clock.now().date()).map_err(AuditRequestError::Personnummer)
}

/// `POST /v1/audit/subject-search` `{"personnummer", "cursor"?, "limit"?}`.
pub async fn subject_search(
    State(state): State<AppState>,
    principal: Principal,
    rid: Option<Extension<RequestId>>,
    body: JsonBody<SubjectSearch>,
) -> ApiResult<Response> {
    principal.require(Role::Auditor)?;
    let b = body.value;
    let pnr = personnummer(&state, &b.personnummer)?;
    let subject = state
        .crypto
        .audit_pseudonym(&pnr)
        .map_err(ApiError::internal)?;
    let filter = RecordFilter {
        subject: Some(subject.as_str().to_owned()),
        ..RecordFilter::default()
    };
    let limit = limit(b.limit)?;
    let cursor = cursor(b.cursor.as_deref())?;
    let page = query::records_page(&state.store, &filter, cursor, limit).await?;
    let reason = match b.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        None => "subject-search".to_owned(),
        Some(r) => {
            if r.chars().count() > 200 || has_long_number(r) {
                return Err(AuditRequestError::Reason.into());
            }
            format!("subject-search: {r}")
        }
    };
    log_query(
        &state,
        &principal,
        rid,
        Action::AuditQuery,
        reason,
        Some(&subject),
    )
    .await?;
    Ok(Json(page_json(&page)).into_response())
}

/// Whether free text could hold an identifier: six digits or more in a row
/// (ignoring `-`, `+` and spaces between them).
pub(crate) fn has_long_number(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= 6 {
                return true;
            }
        } else if !matches!(c, '-' | '+' | ' ') {
            run = 0;
        }
    }
    false
}

/// Signs a head covering every committed record and returns the newest.
pub(crate) async fn fresh_head(state: &AppState) -> ApiResult<query::StoredHead> {
    state
        .audit
        .sign_head()
        .await
        .map_err(ApiError::unavailable)?;
    query::latest_head(&state.store)
        .await?
        .ok_or_else(|| ApiError::internal("no tree head after signing one"))
}

/// `GET /v1/audit/tree-head`. The query's own record is appended first, so
/// the head returned covers it too (and is never the empty tree).
pub async fn tree_head(auditor: Auditor) -> ApiResult<Response> {
    auditor.log("tree-head".into(), None).await?;
    let state = auditor.state;
    let head = fresh_head(&state).await?;
    state
        .witnesses
        .await_head(&state.store, head.tree_size)
        .await;
    Ok(Json(state.witnesses.head_json(&state.store, &head).await).into_response())
}

/// Answers a proof query: `build` assembles the proof from the stored
/// nodes that `ids` names (fetched in one query), the query is logged as an
/// `audit-query` with `reason`, and the answer is `fields` with the proof's
/// `hashes` in hex.
async fn proof_answer(
    auditor: &Auditor,
    reason: String,
    mut fields: serde_json::Map<String, Value>,
    ids: Result<Vec<NodeId>, ProofError>,
    build: impl FnOnce(&HashMap<NodeId, Hash>) -> Result<Vec<Hash>, ProofError>,
) -> ApiResult<Response> {
    let ids = ids.map_err(ApiError::internal)?;
    let nodes = query::nodes(&auditor.state.store, &ids).await?;
    let hashes = build(&nodes).map_err(ApiError::internal)?;
    let hashes: Vec<Value> = hashes.iter().map(|h| Value::from(hex::encode(h))).collect();
    fields.insert("hashes".into(), Value::Array(hashes));
    auditor.log(reason, None).await?;
    Ok(Json(fields).into_response())
}

/// `GET /v1/audit/proof/inclusion?seq=&tree_size=`.
pub async fn inclusion(
    auditor: Auditor,
    q: Result<Query<ProofParams>, QueryRejection>,
) -> ApiResult<Response> {
    let (seq, size) = params(q)?.inclusion()?;
    if seq == 0 {
        return Err(AuditRequestError::SeqZero.into());
    }
    let current = query::tree_size(&auditor.state.store).await?;
    if seq > size || size > current {
        return Err(AuditRequestError::NoRecord { seq, size, current }.into());
    }
    let index = seq - 1;
    let reason = format!("inclusion seq={seq} tree_size={size}");
    let fields = serde_json::Map::from_iter([
        ("leaf_index".into(), Value::from(index)),
        ("tree_size".into(), Value::from(size)),
    ]);
    let ids = proof::inclusion_proof_nodes(index, size);
    proof_answer(&auditor, reason, fields, ids, |nodes| {
        proof::inclusion_proof(index, size, nodes)
    })
    .await
}

/// `GET /v1/audit/proof/consistency?first=&second=`.
pub async fn consistency(
    auditor: Auditor,
    q: Result<Query<ProofParams>, QueryRejection>,
) -> ApiResult<Response> {
    let (first, second) = params(q)?.consistency()?;
    if first > second {
        return Err(AuditRequestError::FirstAfterSecond.into());
    }
    let current = query::tree_size(&auditor.state.store).await?;
    if second > current {
        return Err(AuditRequestError::NoTree { second, current }.into());
    }
    let reason = format!("consistency first={first} second={second}");
    let fields = serde_json::Map::from_iter([
        ("first".into(), Value::from(first)),
        ("second".into(), Value::from(second)),
    ]);
    let ids = proof::consistency_proof_nodes(first, second);
    proof_answer(&auditor, reason, fields, ids, |nodes| {
        proof::consistency_proof(first, second, nodes)
    })
    .await
}
