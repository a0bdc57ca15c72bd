//! The steps of one exchange (DESIGN §5), one function each, in the
//! contract's order: [`envelope`] (envelope and payload), [`route`],
//! [`consent`], [`filter`], [`subject`] (the message the recipient gets),
//! [`record`] (the audit record and everything committed with it), and
//! [`deliver`] (commit, then the outbox or the sync delivery). [`run`]
//! chains them; [`refuse`] records a refusal of any step.
//!
//! The personnummer is parsed once, in [`envelope`], into a
//! [`Subject`]; the later steps only ask it for the form they need.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use time::Date;

use super::error::ExchangeError;
use super::sync::Decision;
use super::{Delivery, ExchangeCtx};
use crate::audit::record::{Action, Decision as AuditDecision};
use crate::config::PartyConfig;
use crate::consent::cache;
use crate::consent::model::{self, ConsentRow};
use crate::error::{quote_id, ApiError, ProblemCode};
use crate::ids::ConsentId;
use crate::policy::route::{ConsentRequirement, RouteConfig};
use crate::policy::{self, FilterInput, Filtered, SubjectMode};
use crate::schema::MessageSchema;
use crate::state::AppState;
use crate::subject::personnummer::Personnummer;
use crate::subject::Subject;

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

/// What the envelope step established.
pub(super) struct Checked<'a> {
    msg_type: String,
    purpose: String,
    payload: Value,
    /// The subject, parsed once.
    subject: Option<Subject>,
    recipient: &'a PartyConfig,
    schema: &'a MessageSchema,
    /// The gateway clock's date when the exchange arrived: every number in
    /// it (subject, identifier fields, numbers in text) is judged on it.
    today: Date,
}

/// The filtered payload and what the filter step decided.
pub(super) struct Outcome {
    filtered: Filtered,
    /// Numbers in forwarded text were withheld (§10).
    numbers_withheld: bool,
}

/// Runs the steps of an authenticated `POST /v1/exchanges`.
pub(super) async fn run(
    state: &AppState,
    ctx: &mut ExchangeCtx,
    raw: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let checked = envelope(state, ctx, raw)?;
    let route = route(state, ctx, &checked)?;
    let consent = consent(state, ctx, &checked, route).await?;
    let outcome = filter(&checked, route, consent.as_ref())?;
    let body = subject(state, ctx, &checked, route, consent.as_ref(), &outcome)?;
    let decision = record(
        state,
        ctx,
        &checked,
        route,
        consent.as_ref(),
        &outcome,
        body,
    )?;
    deliver(state, ctx, checked, consent, outcome, decision).await
}

/// Records a refusal (client errors only: a 5xx is not a decision) and
/// passes the error on. The refused exchange has an id and a row (status
/// `denied`), so the sender can look it up and quote it.
pub(super) async fn refuse(state: &AppState, ctx: &ExchangeCtx, e: ApiError) -> ApiError {
    if !e.code.status().is_client_error() || e.code == ProblemCode::IdempotencyConflict {
        return e;
    }
    let mut record = ctx.record(Action::ExchangeDenied, AuditDecision::Deny);
    record.reason = Some(e.code.as_str().to_owned());
    let row = super::store::denied_row(ctx, e.code.as_str(), state.clock.now_us());
    if let Err(err) = state.audit.append(record, vec![row]).await {
        return ApiError::from(err);
    }
    metrics::counter!("samgate_exchanges_total", "outcome" => "denied", "reason" => e.code.as_str()).increment(1);
    e.with("exchange_id", ctx.exchange_id.clone())
}

/// Step 1: the envelope (400), the recipient and type (422), the payload
/// against its schema (422), and the identifier fields, which must name
/// the envelope's subject. Only validated values reach the (permanent)
/// audit record: an unknown party, type or purpose is recorded as absent.
fn envelope<'a>(
    state: &'a AppState,
    ctx: &mut ExchangeCtx,
    raw: &[u8],
) -> Result<Checked<'a>, ApiError> {
    let env: Envelope = crate::http::extract::parse_json(raw)?;
    let config = &state.live().config;
    if config.known_purposes().contains(&env.purpose) {
        ctx.purpose = Some(env.purpose.clone());
    }
    ctx.delivery = env.delivery.unwrap_or(Delivery::Sync);
    let today = state.clock.now().date();
    let number = match &env.subject {
        Some(s) => Some(Personnummer::parse_at(s, today).map_err(ExchangeError::InvalidSubject)?),
        None => None,
    };
    let recipient = config.party(&env.to);
    let subject = match number {
        Some(n) => {
            let s = Subject::new(&state.crypto, n, recipient.map(|r| &r.id))
                .map_err(ApiError::internal)?;
            ctx.subject_audit = Some(s.audit().clone());
            Some(s)
        }
        None => None,
    };
    let recipient = recipient.ok_or_else(|| ExchangeError::UnknownParty(quote_id(&env.to)))?;
    ctx.to = Some(recipient.id.to_string());
    let schema = (state.schemas.get(&env.msg_type))
        .ok_or_else(|| ExchangeError::UnknownType(quote_id(&env.msg_type)))?;
    ctx.msg_type = Some(env.msg_type.clone());
    schema.validate(&env.payload)?;
    policy::check_identifiers(schema, &env.payload, today)?;
    identifiers_name_the_subject(schema, &env.payload, subject.as_ref(), today)?;
    Ok(Checked {
        msg_type: env.msg_type,
        purpose: env.purpose,
        payload: env.payload,
        subject,
        recipient,
        schema,
        today,
    })
}

/// Identifier fields in a payload (e.g. a referral's `/subject`) must name
/// the envelope's subject: consent is checked for that person only, so a
/// payload about anyone else is refused (422, with the pointer, no value).
fn identifiers_name_the_subject(
    schema: &MessageSchema,
    payload: &Value,
    subject: Option<&Subject>,
    today: Date,
) -> Result<(), ExchangeError> {
    let Some(obj) = payload.as_object() else {
        return Ok(());
    };
    for (name, value) in obj {
        let pointer = crate::schema::field_pointer(name);
        if !schema.field(&pointer).is_some_and(|f| f.identifier) {
            continue;
        }
        let Some(subject) = subject else {
            return Err(ExchangeError::SubjectRequiredBy(pointer));
        };
        let same = value
            .as_str()
            .and_then(|v| Personnummer::parse_at(v, today).ok())
            .is_some_and(|p| subject.is(&p));
        if !same {
            return Err(ExchangeError::AnotherPerson(pointer));
        }
    }
    Ok(())
}

/// Step 2: the route for (sender, recipient, type, purpose) (403).
fn route<'a>(
    state: &'a AppState,
    ctx: &ExchangeCtx,
    c: &Checked<'_>,
) -> Result<&'a RouteConfig, ExchangeError> {
    let from = &ctx.principal.party;
    let to = &c.recipient.id;
    crate::policy::route::find(
        &state.live().config.routes,
        from,
        to,
        &c.msg_type,
        &c.purpose,
    )
    .ok_or_else(|| ExchangeError::NoRoute {
        from: from.to_string(),
        to: to.to_string(),
        msg_type: c.msg_type.clone(),
        purpose: quote_id(&c.purpose),
    })
}

/// Step 3: the consent the route requires, found by the subject's consent
/// form and decided for this message (403).
async fn consent(
    state: &AppState,
    ctx: &mut ExchangeCtx,
    c: &Checked<'_>,
    route: &RouteConfig,
) -> Result<Option<ConsentRow>, ApiError> {
    if route.consent == ConsentRequirement::NotRequired {
        return Ok(None);
    }
    let subject = c.subject.as_ref().ok_or(ExchangeError::SubjectRequired)?;
    let (consent, guard) = cache::check(
        state,
        ctx.consent_lookup,
        subject.consent(),
        &ctx.principal.party,
        &c.recipient.id,
        &c.msg_type,
        &c.purpose,
    )
    .await?;
    ctx.consent_guard = guard;
    // After a closure, a further `closure` goes only to a party that no
    // delivered closure has told yet (§13).
    let to = c.recipient.id.as_str();
    if !crate::consent::lifecycle::closure_allowed(
        &state.store,
        &consent,
        &c.msg_type,
        &c.purpose,
        to,
    )
    .await?
    {
        return Err(model::Denial::Scope.into());
    }
    ctx.consent_id = Some(ConsentId::stored(&consent.id));
    Ok(Some(consent))
}

/// Step 4: the fields the route allows and the consent covers, identifiers
/// in the route's subject form; then, where the route hides who the person
/// is, no forwarded string may name them (or anyone) by number (§10).
fn filter(
    c: &Checked<'_>,
    route: &RouteConfig,
    consent: Option<&ConsentRow>,
) -> Result<Outcome, ApiError> {
    let categories = consent.map(ConsentRow::category_set);
    // Every identifier field names the subject (step 1), so each gets the
    // subject's one recipient form.
    let form = c
        .subject
        .as_ref()
        .and_then(|s| s.recipient_form(route.subject));
    let mut ident = |_: &Personnummer| form.clone();
    let mut filtered = policy::filter(
        FilterInput {
            schema: c.schema,
            payload: &c.payload,
            allow: &route.fields,
            consent_categories: categories.as_ref(),
            today: c.today,
        },
        &mut ident,
    )?;
    let numbers_withheld = route.subject != SubjectMode::Reveal
        && super::numbers::withhold_numbers(c.schema, &mut filtered, c.today);
    Ok(Outcome {
        filtered,
        numbers_withheld,
    })
}

/// Step 5: the message the recipient gets, the subject in the route's form
/// and the consent as the recipient's reference (§5, §10, §13).
fn subject(
    state: &AppState,
    ctx: &ExchangeCtx,
    c: &Checked<'_>,
    route: &RouteConfig,
    consent: Option<&ConsentRow>,
    o: &Outcome,
) -> Result<Bytes, ApiError> {
    let subject_json = match c.subject.as_ref().map(|s| (s, route.subject)) {
        Some((s, SubjectMode::Reveal)) => json!({"personnummer": s.number().expose()}),
        Some((s, SubjectMode::Pseudonymise)) => {
            json!({"pseudonym": s.recipient_form(SubjectMode::Pseudonymise)})
        }
        _ => Value::Null,
    };
    let consent_ref = state.crypto.recipient_consent_id(
        route.subject,
        &c.recipient.id,
        ctx.consent_id.as_deref(),
    );
    let mut message = json!({
        "exchange_id": ctx.exchange_id,
        "from": ctx.principal.party.as_str(),
        "to": c.recipient.id.as_str(),
        "type": c.msg_type,
        "purpose": c.purpose,
        "subject": subject_json,
        "consent_id": consent_ref,
        "payload": o.filtered.payload,
    });
    if let (true, Some(obj)) = (protected(consent), message.as_object_mut()) {
        // DESIGN §13: the recipient is told; `contact` was never forwarded.
        obj.insert("protected_identity".into(), Value::Bool(true));
    }
    Ok(Bytes::from(
        serde_json::to_vec(&message).map_err(ApiError::internal)?,
    ))
}

fn protected(consent: Option<&ConsentRow>) -> bool {
    consent.is_some_and(|c| c.protected_identity)
}

/// Step 6: the `exchange-forwarded` record and what is committed with it:
/// the exchange row, the vault rows, the sealed outbox row (async) and the
/// idempotency key's link.
fn record(
    state: &AppState,
    ctx: &mut ExchangeCtx,
    c: &Checked<'_>,
    route: &RouteConfig,
    consent: Option<&ConsentRow>,
    o: &Outcome,
    body: Bytes,
) -> Result<Decision, ApiError> {
    ctx.forwarded = o.filtered.forwarded.clone();
    ctx.withheld = o.filtered.withheld.clone();
    let status = match ctx.delivery {
        Delivery::Async => "queued",
        Delivery::Sync => "forwarded",
    };
    let now = state.clock.now_us();
    let mut effects =
        super::store::forwarded_rows(ctx, &c.recipient.id, status, route.subject, now)
            .map_err(ApiError::internal)?;
    let guarded = ctx.consent_guard.is_some();
    effects.extend(ctx.consent_guard.take());
    let mut vault_keys = Vec::new();
    if let Some(s) = &c.subject {
        let known = |key: &str| state.vault_is_stored(key);
        let (rows, keys) = s.exchange_vault_rows(&state.crypto, route.subject, &known)?;
        effects.extend(rows);
        vault_keys = keys;
    }
    let endpoint = c
        .recipient
        .endpoint
        .clone()
        .ok_or(ExchangeError::NoEndpoint)?;
    if ctx.delivery == Delivery::Async {
        effects.push(super::store::outbox_insert(
            state,
            &ctx.exchange_id,
            &endpoint,
            &body,
        )?);
    }
    if let Some(key) = &ctx.idempotency_key {
        effects.push(super::store::link_idempotency_key(ctx, key));
    }
    let mut record = ctx.record(Action::ExchangeForwarded, AuditDecision::Permit);
    let contact_withheld = || {
        o.filtered.withheld.iter().any(|w| {
            c.schema
                .field(w)
                .is_some_and(|f| f.category == crate::schema::Category::Contact)
        })
    };
    if o.numbers_withheld {
        record.reason = Some(super::numbers::REASON.to_owned());
    } else if protected(consent) && contact_withheld() {
        record.reason = Some("protected_identity".into());
    }
    Ok(Decision {
        record,
        effects,
        vault_keys,
        guarded,
        endpoint,
        body,
    })
}

/// Step 7: commit the decision before anything leaves; then an async
/// exchange is the outbox's (202), a sync one is delivered now.
async fn deliver(
    state: &AppState,
    ctx: &mut ExchangeCtx,
    c: Checked<'_>,
    consent: Option<ConsentRow>,
    o: Outcome,
    d: Decision,
) -> Result<(StatusCode, Value), ApiError> {
    if ctx.delivery == Delivery::Async {
        if let Err(e) = state.audit.append(d.record, d.effects).await {
            ctx.consent_stale = cache::refused(&e, d.guarded);
            return Err(if ctx.consent_stale {
                cache::stale_error()
            } else {
                e.into()
            });
        }
        state.mark_vault_stored(d.vault_keys);
        metrics::counter!("samgate_exchanges_total", "outcome" => "forwarded", "reason" => "none")
            .increment(1);
        state.outbox_notify.notify_one();
        return Ok((
            StatusCode::ACCEPTED,
            json!({
                "exchange_id": ctx.exchange_id,
                "status": "queued",
                "forwarded": o.filtered.forwarded,
                "withheld": o.filtered.withheld,
            }),
        ));
    }
    let tail = super::sync::SyncTail {
        state: state.clone(),
        ctx: ctx.clone(),
        decision: d,
        recipient_id: c.recipient.id.clone(),
        purpose: c.purpose,
        consent,
        subject: c.subject,
        forwarded: o.filtered.forwarded,
        withheld: o.filtered.withheld,
    };
    ctx.idempotency_finished = ctx.idempotency_key.is_some();
    super::sync::finish(tail)
        .await
        .unwrap_or_else(|super::sync::Stale| {
            ctx.consent_stale = true;
            ctx.idempotency_finished = false;
            Err(cache::stale_error())
        })
}
