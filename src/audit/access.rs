//! Access logging: the one helper that turns a read of the log, a consent
//! or an exchange into its own `audit-query` record (DESIGN §6: "every query
//! is itself audited"), committed before the answer leaves. The auditor API,
//! the consent API and the exchange API all call [`log_query`].

use axum::Extension;

use super::record::{Action, AuditRecord, Decision};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::http::extract::RequestId;
use crate::state::AppState;

/// Appends the `audit-query` record of a request; the answer is sent only
/// once it is committed.
pub async fn log_query(
    state: &AppState,
    principal: &Principal,
    rid: Option<Extension<RequestId>>,
    act: Action,
    reason: String,
    subject: Option<String>,
) -> ApiResult<()> {
    let record = AuditRecord {
        request_id: rid.map(|Extension(r)| r.0),
        actor_party: Some(principal.party.to_string()),
        actor_user: principal.user.clone(),
        subject,
        reason: Some(reason.chars().take(500).collect()),
        ..AuditRecord::new(act, Decision::Permit)
    };
    state.audit.append(record, Vec::new()).await?;
    Ok(())
}
