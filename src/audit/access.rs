//! Access logging: the one helper that turns a read of the log, a consent
//! or an exchange into its own `audit-query` record (DESIGN §6: "every query
//! is itself audited"), committed before the answer leaves. The auditor API,
//! the consent API and the exchange API all call [`log_query`]; the
//! auditor's queries take their request as an [`Auditor`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Extension;

use super::record::{Action, AuditRecord, Decision};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::RequestId;
use crate::party::Role;
use crate::state::AppState;
use crate::subject::pseudonym::{Audit, Pseudonym};

/// A request of a named auditor (role `auditor` with a user): what an
/// auditor query needs to answer and to log itself. Extracting it refuses
/// any other principal.
pub struct Auditor {
    /// The gateway's state.
    pub state: AppState,
    /// The auditor.
    pub principal: Principal,
    /// The request's id, for the query's own record.
    pub rid: Option<Extension<RequestId>>,
}

impl FromRequestParts<AppState> for Auditor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let rid = parts.extensions.get::<RequestId>().cloned().map(Extension);
        Auditor::new(state.clone(), principal, rid)
    }
}

impl Auditor {
    /// The request of `principal`, refused unless it is a named auditor
    /// (for the console, which calls the auditor API's handlers itself).
    pub fn new(
        state: AppState,
        principal: Principal,
        rid: Option<Extension<RequestId>>,
    ) -> ApiResult<Self> {
        principal.require(Role::Auditor)?;
        Ok(Auditor {
            state,
            principal,
            rid,
        })
    }

    /// Appends this query's `audit-query` record ([`log_query`]).
    pub async fn log(&self, reason: String, subject: Option<&Pseudonym<Audit>>) -> ApiResult<()> {
        log_query(
            &self.state,
            &self.principal,
            self.rid.clone(),
            Action::AuditQuery,
            reason,
            subject,
        )
        .await
    }
}

/// Appends the `audit-query` record of a request; the answer is sent only
/// once it is committed.
pub async fn log_query(
    state: &AppState,
    principal: &Principal,
    rid: Option<Extension<RequestId>>,
    act: Action,
    reason: String,
    subject: Option<&Pseudonym<Audit>>,
) -> ApiResult<()> {
    let mut record = AuditRecord {
        request_id: rid.map(|Extension(r)| r.0),
        actor_party: Some(principal.party.to_string()),
        actor_user: principal.user.clone(),
        reason: Some(reason.chars().take(500).collect()),
        ..AuditRecord::new(act, Decision::Permit)
    };
    record.set_subject(subject);
    state.audit.append(record, Vec::new()).await?;
    Ok(())
}
