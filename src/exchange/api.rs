//! `POST /v1/exchanges` and `GET /v1/exchanges/{id}` (DESIGN §5).
//!
//! The steps run in the contract's order: authenticate; validate the
//! envelope and the payload; find the route; check consent; filter fields;
//! pseudonymise; append the audit record and commit it (with the exchange
//! row, and for async the sealed outbox row, in the same transaction); only
//! then deliver. Every refusal after authentication is itself an audit
//! record (`exchange-denied`) with the problem code as its reason.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reply;
use super::{deliver, idempotency, Delivery, ExchangeCtx};
use crate::audit::record::{action, decision};
use crate::auth::Principal;
use crate::config::{ConsentRequirement, PartyId, Role, RouteConfig};
use crate::consent::{cache, model};
use crate::error::{ApiError, ApiResult, ProblemCode};
use crate::http::RequestId;
use crate::personnummer::Personnummer;
use crate::policy::{self, FilterError, FilterInput, SubjectMode};
use crate::schema::SchemaError;
use crate::state::AppState;
use crate::store::Stmt;

/// The request envelope.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    to: String,
    #[serde(rename = "type")]
    msg_type: String,
    purpose: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    delivery: Option<Delivery>,
    payload: Value,
}

/// `POST /v1/exchanges` (role agency).
pub async fn post(State(state): State<AppState>, principal: Principal, req: Request) -> Response {
    let rid = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    if let Err(e) = principal.require(Role::Agency) {
        return e.into_response();
    }
    let headers = req.headers().clone();
    let idem_key = match idempotency::key_from(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    // Stored and compared only as a keyed digest (DESIGN §10): the key is
    // the caller's text and may hold anything, a personnummer included.
    let idem_key = idem_key.map(|k| {
        state
            .crypto
            .idempotency_digest(principal.party.as_str(), &k)
    });
    let mut ctx = ExchangeCtx::new(principal.clone(), rid);
    ctx.idempotency_key = idem_key.clone();
    let raw = match read(&state, &headers, req).await {
        Ok(b) => b,
        Err(e) => return deny(&state, &ctx, e).await.into_response(),
    };
    // Keyed digest: the body holds a personnummer (see Crypto::payload_digest).
    ctx.payload_sha256 = Some(state.crypto.payload_digest(&raw));
    let request_hash = ctx.payload_sha256.clone().unwrap_or_default();
    if let Some(key) = &idem_key {
        match idempotency::begin(&state, &principal.party, key, &request_hash).await {
            Ok(idempotency::Begin::Proceed) => {}
            Ok(idempotency::Begin::Replay(rsp)) => return rsp,
            Err(e) => return e.into_response(),
        }
    }
    let mut result = handle(&state, &mut ctx, &raw).await;
    if ctx.consent_stale {
        // The consent changed since this instance cached it (consent::cache):
        // nothing was written or sent; decide again from the database, once.
        ctx.retry_fresh();
        result = handle(&state, &mut ctx, &raw).await;
    }
    let result = match result {
        Ok(r) => Ok(r),
        Err(e) => Err(deny(&state, &ctx, e).await),
    };
    let (status, body) = match &result {
        Ok((status, body)) => (*status, body.clone()),
        Err(e) => (e.code.status(), e.body()),
    };
    if let (Some(key), false) = (&idem_key, ctx.idempotency_finished) {
        idempotency::finish(&state, &principal.party, key, status, &body).await;
    }
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn read(state: &AppState, headers: &HeaderMap, req: Request) -> Result<Bytes, ApiError> {
    crate::http::check_json_content_type(headers)?;
    crate::http::read_body(req.into_body(), state.config.server.max_body_bytes).await
}

/// Records a refusal (client errors only: a 5xx is not a decision) and
/// passes the error on.
async fn deny(state: &AppState, ctx: &ExchangeCtx, e: ApiError) -> ApiError {
    if e.code.status().is_client_error() && e.code != ProblemCode::IdempotencyConflict {
        let mut record = ctx.record(action::EXCHANGE_DENIED, decision::DENY);
        record.reason = Some(e.code.as_str().to_owned());
        // The refused exchange has an id and a row (status `denied`), so the
        // sender can look it up and quote it.
        let row = Stmt::new(
            "INSERT INTO exchanges (id, sender, recipient, msg_type, purpose, delivery, status, attempts, \
             consent_id, subject, forwarded, withheld, last_error, created_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, 'denied', 0, $7, $8, '[]', '[]', $9, $10)",
        )
        .text(ctx.exchange_id.clone())
        .text(ctx.principal.party.to_string())
        .text(ctx.to.clone().unwrap_or_default())
        .text(ctx.msg_type.clone().unwrap_or_default())
        .text(ctx.purpose.clone().unwrap_or_default())
        .text(if ctx.delivery == Delivery::Async { "async" } else { "sync" })
        .opt_text(ctx.consent_id.clone())
        .opt_text(ctx.subject_audit.clone())
        .text(e.code.as_str())
        .int(state.clock.now_us());
        if let Err(err) = state.audit.append(record, vec![row]).await {
            return ApiError::from(err);
        }
        metrics::counter!("samgate_exchanges_total", "outcome" => "denied", "reason" => e.code.as_str()).increment(1);
        return e.with("exchange_id", ctx.exchange_id.clone());
    }
    e
}

async fn handle(
    state: &AppState,
    ctx: &mut ExchangeCtx,
    raw: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let env: Envelope = crate::http::parse_json(raw)?;
    // Only validated values reach the (permanent) audit record: an unknown
    // party, type or purpose is recorded as absent, never echoed.
    if state.live().config.known_purposes().contains(&env.purpose) {
        ctx.purpose = Some(env.purpose.clone());
    }
    ctx.delivery = env.delivery.unwrap_or(Delivery::Sync);
    let subject = match &env.subject {
        Some(s) => Some(Personnummer::parse(s).map_err(|e| {
            ApiError::new(ProblemCode::InvalidPersonnummer, format!("`subject`: {e}"))
        })?),
        None => None,
    };
    if let Some(p) = &subject {
        ctx.subject_audit = Some(state.crypto.audit_pseudonym(p));
    }
    let recipient = state.live().config.party(&env.to).ok_or_else(|| {
        ApiError::new(
            ProblemCode::UnknownParty,
            format!("`to`: unknown party {}", crate::error::quote_id(&env.to)),
        )
    })?;
    let recipient_id = recipient.id.clone();
    ctx.to = Some(recipient_id.to_string());
    let schema = state.schemas.get(&env.msg_type).ok_or_else(|| {
        ApiError::new(
            ProblemCode::UnknownType,
            format!(
                "`type`: unknown message type {}",
                crate::error::quote_id(&env.msg_type)
            ),
        )
    })?;
    ctx.msg_type = Some(env.msg_type.clone());
    schema.validate(&env.payload).map_err(schema_error)?;
    policy::check_identifiers(schema, &env.payload).map_err(filter_error)?;
    identifiers_name_the_subject(schema, &env.payload, subject.as_ref())?;
    let route = find_route(
        state,
        &ctx.principal.party,
        &recipient_id,
        &env.msg_type,
        &env.purpose,
    )
    .ok_or_else(|| {
        ApiError::new(
            ProblemCode::RouteNotAllowed,
            format!(
                "no route allows `{}` to send `{}` to `{}` for {}",
                ctx.principal.party,
                env.msg_type,
                recipient_id,
                crate::error::quote_id(&env.purpose)
            ),
        )
    })?;
    let mut guard = None;
    let consent = match route.consent {
        ConsentRequirement::NotRequired => None,
        ConsentRequirement::Required => {
            let p = subject.as_ref().ok_or_else(|| {
                ApiError::new(
                    ProblemCode::InvalidEnvelope,
                    "`subject` is required on this route",
                )
            })?;
            let subject = state.crypto.consent_pseudonym(p);
            let (c, g) = cache::check(
                state,
                ctx.consent_lookup,
                &subject,
                &ctx.principal.party,
                &recipient_id,
                &env.msg_type,
                &env.purpose,
            )
            .await?;
            ctx.consent_id = Some(c.id.clone());
            guard = g;
            Some(c)
        }
    };
    let categories = consent.as_ref().map(model::ConsentRow::category_set);
    let mut ident = |p: &Personnummer| identifier(state, route.subject, &recipient_id, p);
    let mut filtered = policy::filter(
        FilterInput {
            schema,
            payload: &env.payload,
            allow: &route.fields,
            consent_categories: categories.as_ref(),
        },
        &mut ident,
    )
    .map_err(filter_error)?;
    // Numbers in text (DESIGN §10): where the route hides who the person
    // is, no forwarded string may name them (or anyone) by number.
    let numbers_withheld = route.subject != SubjectMode::Reveal
        && super::numbers::withhold_numbers(schema, &mut filtered);
    let subject_json = match (&subject, route.subject) {
        (Some(p), SubjectMode::Reveal) => json!({"personnummer": p.expose()}),
        (Some(p), SubjectMode::Pseudonymise) => {
            json!({"pseudonym": identifier(state, SubjectMode::Pseudonymise, &recipient_id, p)})
        }
        _ => Value::Null,
    };
    let exchange_id = ctx.exchange_id.clone();
    let consent_ref = consent_reference(
        state,
        route.subject,
        &recipient_id,
        ctx.consent_id.as_deref(),
    );
    let protected = consent.as_ref().is_some_and(|c| c.protected_identity);
    let mut message = json!({
        "exchange_id": exchange_id,
        "from": ctx.principal.party.as_str(),
        "to": recipient_id.as_str(),
        "type": env.msg_type,
        "purpose": env.purpose,
        "subject": subject_json,
        "consent_id": consent_ref,
        "payload": filtered.payload,
    });
    if let (true, Some(obj)) = (protected, message.as_object_mut()) {
        // DESIGN §13: the recipient is told; `contact` was never forwarded.
        obj.insert("protected_identity".into(), Value::Bool(true));
    }
    let body = Bytes::from(serde_json::to_vec(&message).map_err(ApiError::internal)?);
    ctx.forwarded = filtered.forwarded.clone();
    ctx.withheld = filtered.withheld.clone();

    // Commit the decision before anything leaves.
    let fwd = serde_json::to_string(&filtered.forwarded).unwrap_or_default();
    let wh = serde_json::to_string(&filtered.withheld).unwrap_or_default();
    let status = if ctx.delivery == Delivery::Async {
        "queued"
    } else {
        "forwarded"
    };
    let mut effects: Vec<Stmt> = vec![
        ctx.exchange_row_stmt(state, &recipient_id, status, &fwd, &wh),
        // The form the subject travels in, for revocation notices (§13).
        Stmt::new("UPDATE exchanges SET subject_mode = $1 WHERE id = $2")
            .text(crate::consent::lifecycle::mode_name(route.subject))
            .text(exchange_id.clone()),
    ];
    let guarded = guard.is_some();
    effects.extend(guard);
    let mut vault_keys = Vec::new();
    if let Some(p) = &subject {
        // The recipient's domain only when its pseudonym leaves the gateway:
        // that is what a reply may need to resolve.
        let domains: &[&str] = if route.subject == SubjectMode::Pseudonymise {
            &[crate::pseudonym::DOMAIN_AUDIT, recipient_id.as_str()]
        } else {
            &[crate::pseudonym::DOMAIN_AUDIT]
        };
        let (rows, keys) = crate::consent::api::vault_stmts(state, p, domains)?;
        effects.extend(rows);
        vault_keys = keys;
    }
    let endpoint = recipient
        .endpoint
        .clone()
        .ok_or_else(|| ApiError::internal("recipient without endpoint"))?;
    if ctx.delivery == Delivery::Async {
        effects.push(super::outbox::insert_stmt(
            state,
            &exchange_id,
            &endpoint,
            &body,
        )?);
    }
    if let Some(key) = &ctx.idempotency_key {
        // The key learns its exchange in the same transaction as the
        // decision: a retry after a crash answers from the exchange instead
        // of running it again.
        effects.push(
            Stmt::new("UPDATE idempotency_keys SET exchange_id = $1 WHERE party = $2 AND key = $3")
                .text(exchange_id.clone())
                .text(ctx.principal.party.to_string())
                .text(key.clone()),
        );
    }
    let mut record = ctx.record(action::EXCHANGE_FORWARDED, decision::PERMIT);
    if numbers_withheld {
        record.reason = Some(super::numbers::REASON.to_owned());
    } else if protected
        && filtered.withheld.iter().any(|w| {
            schema
                .field(w)
                .is_some_and(|f| f.category == crate::schema::Category::Contact)
        })
    {
        record.reason = Some("protected_identity".into());
    }
    if ctx.delivery == Delivery::Async {
        if let Err(e) = state.audit.append(record, effects).await {
            ctx.consent_stale = cache::refused(&e, guarded);
            return Err(if ctx.consent_stale {
                cache::stale_error()
            } else {
                e.into()
            });
        }
        state.mark_vault_stored(vault_keys);
        metrics::counter!("samgate_exchanges_total", "outcome" => "forwarded", "reason" => "none")
            .increment(1);
        state.outbox_notify.notify_one();
        return Ok((
            StatusCode::ACCEPTED,
            json!({
                "exchange_id": exchange_id,
                "status": "queued",
                "forwarded": filtered.forwarded,
                "withheld": filtered.withheld,
            }),
        ));
    }
    // DESIGN §10: a sync exchange finishes when its client leaves. From the
    // commit of the forwarded record on, the work runs in its own task that
    // the request only awaits: if hyper drops the request (the client
    // disconnected, reset the stream, or shutdown passed its grace), the
    // delivery, its outcome record and the stored idempotent answer still
    // happen, so a retry with the same key sees the final result.
    let tail = SyncTail {
        state: state.clone(),
        ctx: ctx.clone(),
        record,
        effects,
        vault_keys,
        guarded,
        endpoint,
        body,
        recipient_id,
        purpose: env.purpose,
        consent,
        subject,
        forwarded: filtered.forwarded,
        withheld: filtered.withheld,
    };
    ctx.idempotency_finished = ctx.idempotency_key.is_some();
    match tokio::spawn(tail.run()).await {
        Ok(Ok(result)) => result,
        Ok(Err(Stale)) => {
            ctx.consent_stale = true;
            ctx.idempotency_finished = false;
            Err(cache::stale_error())
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// The consent cache's guard refused a sync exchange's commit.
struct Stale;

/// Everything a sync exchange needs after its decision, owned, so that it
/// can run to the end in its own task.
struct SyncTail {
    state: AppState,
    ctx: ExchangeCtx,
    record: crate::audit::record::AuditRecord,
    effects: Vec<Stmt>,
    vault_keys: Vec<String>,
    /// The effects hold the consent cache's guard.
    guarded: bool,
    endpoint: String,
    body: Bytes,
    recipient_id: PartyId,
    purpose: String,
    consent: Option<model::ConsentRow>,
    subject: Option<Personnummer>,
    forwarded: Vec<String>,
    withheld: Vec<String>,
}

impl SyncTail {
    /// Commits, delivers, records the outcome and stores the idempotent
    /// answer (the request's own `finish` is skipped for this exchange).
    /// [`Stale`] when the consent cache's guard refused the commit: then
    /// nothing was written or sent, and the request decides again.
    async fn run(mut self) -> Result<Result<(StatusCode, Value), ApiError>, Stale> {
        // Moved, not cloned: nothing after the commit needs them.
        let record = std::mem::take(&mut self.record);
        let effects = std::mem::take(&mut self.effects);
        let result = match self.state.audit.append(record, effects).await {
            Ok(_) => self.deliver().await,
            Err(e) if cache::refused(&e, self.guarded) => return Err(Stale),
            Err(e) => Err(e.into()),
        };
        if let (Some(key), state, ctx) = (&self.ctx.idempotency_key, &self.state, &self.ctx) {
            let (status, body) = match &result {
                Ok((status, body)) => (*status, body.clone()),
                Err(e) => (e.code.status(), e.body()),
            };
            idempotency::finish(state, &ctx.principal.party, key, status, &body).await;
        }
        Ok(result)
    }

    /// After the forwarded record committed: delivers and records the outcome.
    async fn deliver(&self) -> Result<(StatusCode, Value), ApiError> {
        let state = &self.state;
        let ctx = &self.ctx;
        let exchange_id = ctx.exchange_id.clone();
        state.mark_vault_stored(self.vault_keys.clone());
        metrics::counter!("samgate_exchanges_total", "outcome" => "forwarded", "reason" => "none")
            .increment(1);
        let client = state
            .delivery_client
            .for_delivery(Some(self.recipient_id.as_str()), &self.endpoint);
        let signature = deliver::sign_detached(&state.crypto.delivery_signer, &self.body);
        let started = std::time::Instant::now();
        let delivered = deliver::post(
            client,
            &self.endpoint,
            &exchange_id,
            &signature,
            self.body.clone(),
        )
        .await;
        crate::observe::delivery(
            Some(self.recipient_id.as_str()),
            "sync",
            started.elapsed(),
            &delivered,
        );
        match delivered {
            Ok(d) => {
                let record = ctx.record(action::EXCHANGE_DELIVERED, decision::DELIVERED);
                let done = Stmt::new("UPDATE exchanges SET status = 'delivered', attempts = 1, delivered_at_us = $1 WHERE id = $2")
                    .int(state.clock.now_us())
                    .text(exchange_id.clone());
                let mut outcome = vec![done];
                // A delivered closure limits its consent to follow-up (§13).
                outcome.extend(crate::consent::lifecycle::closure_effect(
                    state,
                    ctx.msg_type.as_deref(),
                    ctx.consent_id.as_deref(),
                    &exchange_id,
                ));
                record_outcome(state, record, outcome).await;
                // The message is delivered: from here on the sender is told so,
                // whatever happens to the reply (a reply that cannot be processed
                // or audited is withheld, never an error that invites a resend).
                let (reply, reply_withheld) = match reply::process(
                    state,
                    ctx,
                    &self.recipient_id,
                    &self.purpose,
                    self.consent.as_ref(),
                    self.subject.as_ref(),
                    &d,
                )
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(exchange.id = %exchange_id, error = %e, "reply withheld: it could not be processed");
                        (Value::Null, true)
                    }
                };
                let mut out = json!({
                    "exchange_id": exchange_id,
                    "status": "delivered",
                    "forwarded": self.forwarded,
                    "withheld": self.withheld,
                    "reply": reply,
                });
                if let (true, Some(obj)) = (reply_withheld, out.as_object_mut()) {
                    obj.insert("reply_withheld".into(), Value::Bool(true));
                }
                Ok((StatusCode::OK, out))
            }
            Err(err) => {
                let mut record = ctx.record(action::EXCHANGE_FAILED, decision::FAILED);
                record.reason = Some(err.to_string());
                let failed = Stmt::new("UPDATE exchanges SET status = 'failed', attempts = 1, last_error = $1 WHERE id = $2")
                    .text(err.to_string())
                    .text(exchange_id.clone());
                record_outcome(state, record, vec![failed]).await;
                tracing::warn!(exchange.id = %exchange_id, error = %err, "sync delivery failed");
                Err(ApiError::new(ProblemCode::RecipientFailed, format!("the recipient did not accept the message ({err}); the exchange is recorded as failed"))
                    .with("exchange_id", exchange_id))
            }
        }
    }
}

/// Records the outcome of a delivery that has already happened. The
/// decision itself (`exchange-forwarded`) was committed before the message
/// left; if the outcome cannot be written now (storage just went away), the
/// caller is still told the truth about the delivery and the record is
/// retried in the background for up to ten minutes.
async fn record_outcome(
    state: &AppState,
    record: crate::audit::record::AuditRecord,
    effects: Vec<Stmt>,
) {
    if state
        .audit
        .append(record.clone(), effects.clone())
        .await
        .is_ok()
    {
        return;
    }
    let st = state.clone();
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(delay).await;
            if st
                .audit
                .append(record.clone(), effects.clone())
                .await
                .is_ok()
            {
                return;
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
        }
        tracing::error!(exchange.id = ?record.exchange_id, action = %record.action, "could not record a delivery outcome");
    });
}

/// Identifier fields in a payload (e.g. a referral's `/subject`) must name
/// the envelope's subject: consent is checked for that person only, so a
/// payload about anyone else is refused (422, with the pointer, no value).
fn identifiers_name_the_subject(
    schema: &crate::schema::MessageSchema,
    payload: &Value,
    subject: Option<&Personnummer>,
) -> Result<(), ApiError> {
    let Some(obj) = payload.as_object() else {
        return Ok(());
    };
    for (name, value) in obj {
        let pointer = crate::schema::field_pointer(name);
        if !schema.field(&pointer).is_some_and(|f| f.identifier) {
            continue;
        }
        let Some(subject) = subject else {
            return Err(ApiError::new(
                ProblemCode::InvalidEnvelope,
                format!("`subject` is required when the payload names a person (`{pointer}`)"),
            )
            .with("errors", vec![pointer]));
        };
        let same = value
            .as_str()
            .and_then(|v| Personnummer::parse(v).ok())
            .is_some_and(|p| p.expose() == subject.expose());
        if !same {
            return Err(ApiError::new(
                ProblemCode::InvalidPersonnummer,
                format!("`{pointer}` names another person than the envelope's `subject`"),
            )
            .with("errors", vec![pointer]));
        }
    }
    Ok(())
}

/// How an identifier travels on a route: revealed, the recipient's
/// pseudonym, or removed.
pub fn identifier(
    state: &AppState,
    mode: SubjectMode,
    recipient: &PartyId,
    p: &Personnummer,
) -> Option<String> {
    match mode {
        SubjectMode::Reveal => Some(p.expose().to_owned()),
        SubjectMode::Pseudonymise => state
            .crypto
            .pseudonym(recipient.as_str(), p)
            .map(|x| x.as_str().to_owned()),
        SubjectMode::Omit => None,
    }
}

/// The `consent_id` a recipient gets (DESIGN §5, §10): the consent id on
/// `reveal` routes; on `pseudonymise` and `omit` routes the recipient's own
/// `pc1_` reference, so that it is no join key across routes or recipients.
pub fn consent_reference(
    state: &AppState,
    mode: SubjectMode,
    recipient: &PartyId,
    consent_id: Option<&str>,
) -> Option<String> {
    let id = consent_id?;
    match mode {
        SubjectMode::Reveal => Some(id.to_owned()),
        SubjectMode::Pseudonymise | SubjectMode::Omit => {
            state.crypto.consent_reference(recipient.as_str(), id)
        }
    }
}

/// The route for (from, to, type, purpose), if any (the rule is
/// [`crate::policy::route::find`]).
pub fn find_route<'a>(
    state: &'a AppState,
    from: &PartyId,
    to: &PartyId,
    msg_type: &str,
    purpose: &str,
) -> Option<&'a RouteConfig> {
    crate::policy::route::find(&state.live().config.routes, from, to, msg_type, purpose)
}

/// Most failing pointers listed in a schema_violation problem.
const MAX_ERRORS: usize = 50;

/// Schema errors → 422 with the failing pointers (never values).
pub fn schema_error(e: SchemaError) -> ApiError {
    match e {
        SchemaError::Violation { mut pointers } => {
            let total = pointers.len();
            let truncated = total > MAX_ERRORS;
            pointers.truncate(MAX_ERRORS);
            let mut e = ApiError::new(
                ProblemCode::SchemaViolation,
                format!("the payload does not match its schema at {total} place(s)"),
            )
            .with("errors", pointers);
            if truncated {
                e = e.with("truncated", true);
            }
            e
        }
        other => ApiError::internal(other),
    }
}

/// Filter errors → problems.
pub fn filter_error(e: FilterError) -> ApiError {
    match e {
        FilterError::InvalidPersonnummer { pointer } => ApiError::new(
            ProblemCode::InvalidPersonnummer,
            format!("`{pointer}` is not a valid personnummer or samordningsnummer"),
        )
        .with("errors", vec![pointer]),
        FilterError::ConsentScope { uncovered } => {
            ApiError::new(
                ProblemCode::ConsentScope,
                format!(
                "the consent does not cover the categories of the fields this route allows ({})",
                uncovered.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            ),
            )
        }
        FilterError::NotAnObject => ApiError::new(
            ProblemCode::SchemaViolation,
            "the payload must be a JSON object",
        )
        .with("errors", vec![String::new()]),
    }
}

/// `GET /v1/exchanges/{id}` (the sender, or an auditor).
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    rid: Option<axum::Extension<RequestId>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    principal.require_any(&[Role::Agency, Role::Auditor])?;
    let not_found = || ApiError::new(ProblemCode::NotFound, "no such exchange");
    type Row = (String, String, i64, Option<String>, i64, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT sender, status, attempts, last_error, created_at_us, delivered_at_us FROM exchanges WHERE id = $1",
    )
    .bind(id.clone())
    .fetch_optional(state.store.pool())
    .await?;
    let (sender, status, attempts, last_error, created, delivered) = row.ok_or_else(not_found)?;
    if sender != principal.party.as_str() {
        if !principal.has(Role::Auditor) {
            return Err(not_found());
        }
        // An auditor's read is itself an audit record (DESIGN §6).
        crate::audit::access::log_query(
            &state,
            &principal,
            rid,
            action::AUDIT_QUERY,
            format!("exchange {id}"),
            None,
        )
        .await?;
    }
    Ok(Json(json!({
        "exchange_id": id,
        "status": status,
        "attempts": attempts,
        "last_error": last_error,
        "created_at": crate::clock::rfc3339_us(created),
        "delivered_at": delivered.map(crate::clock::rfc3339_us),
    }))
    .into_response())
}
