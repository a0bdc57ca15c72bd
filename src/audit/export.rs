//! `GET /v1/audit/export` (DESIGN §9 "Export and verify"): the log as NDJSON,
//! streamed in pages, ending with the signed tree head it was cut at.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::Auditor;
use super::api::{fresh_head, number, params};
use super::error::AuditRequestError;
use super::query;
use crate::error::{ApiError, ApiResult};

/// Records per database read.
const EXPORT_PAGE: u64 = 1000;

/// Export query parameters.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    from_seq: Option<String>,
    to_seq: Option<String>,
}

enum Phase {
    Records(u64),
    Done,
}

/// `GET /v1/audit/export?from_seq=&to_seq=`: NDJSON, one record per line,
/// then `{"tree_head": {...}}`. The query is logged and a head signed
/// first; the export stops at that head, so a full export (from seq 1)
/// verifies completely with `samgate audit verify --export`.
pub async fn export(
    auditor: Auditor,
    q: Result<Query<ExportParams>, QueryRejection>,
) -> ApiResult<Response> {
    let p = params(q)?;
    let from = number("from_seq", p.from_seq.as_deref())?
        .unwrap_or(1)
        .max(1);
    let to = number("to_seq", p.to_seq.as_deref())?.unwrap_or(u64::MAX);
    if from > to {
        return Err(AuditRequestError::FromAfterTo.into());
    }
    let mut reason = format!("export from_seq={from}");
    if to != u64::MAX {
        reason.push_str(&format!(" to_seq={to}"));
    }
    auditor.log(reason, None).await?;
    let state = auditor.state;
    let head = fresh_head(&state).await?;
    let end = to.min(head.tree_size);
    state
        .witnesses
        .await_head(&state.store, head.tree_size)
        .await;
    let head_json = state.witnesses.head_json(&state.store, &head).await;
    let mut head_line = serde_json::to_vec(&serde_json::json!({ "tree_head": head_json }))
        .map_err(ApiError::internal)?;
    head_line.push(b'\n');
    let store = state.store.clone();
    let stream = futures::stream::unfold(Phase::Records(from), move |phase| {
        let store = store.clone();
        let head_line = head_line.clone();
        async move {
            match phase {
                Phase::Records(next) if next <= end => {
                    match query::leaves_range(&store, next, end, EXPORT_PAGE).await {
                        Ok(rows) => {
                            let Some(last) = rows.last().map(|r| r.seq) else {
                                return Some((Ok(Bytes::from(head_line)), Phase::Done));
                            };
                            let mut buf = Vec::new();
                            for r in &rows {
                                if serde_json::to_writer(&mut buf, &query::record_json(r)).is_ok() {
                                    buf.push(b'\n');
                                }
                            }
                            Some((Ok(Bytes::from(buf)), Phase::Records(last.saturating_add(1))))
                        }
                        // Ends the body early: the client sees no tree head line.
                        Err(e) => Some((Err(e), Phase::Done)),
                    }
                }
                Phase::Records(_) => Some((Ok(Bytes::from(head_line)), Phase::Done)),
                Phase::Done => None,
            }
        }
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
