//! The router: every route of the API in one place, the role guards, and the
//! layers that wrap it (request id, authentication, rate limit, observation,
//! framing checks).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

use super::error::RequestError;
use super::extract::{RequestId, REQUEST_ID};
use super::meta::{healthz, jwks, metrics_endpoint, openapi, readyz};
use crate::auth::{authenticate, AuthError, Principal};
use crate::error::{ApiError, ProblemMarker};
use crate::state::AppState;

/// The mTLS router: every route of the API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .route("/v1/keys", get(jwks))
        .route("/openapi.json", get(openapi))
        .route("/v1/exchanges", post(crate::exchange::api::post))
        .route("/v1/exchanges/{id}", get(crate::exchange::api::get))
        .route(
            "/v1/consents",
            post(crate::consent::api::record).route_layer(middleware::from_fn(only_intake)),
        )
        .route("/v1/consents/{id}", get(crate::consent::api::get))
        .route(
            "/v1/consents/{id}/revocation",
            post(crate::consent::api::revoke).route_layer(middleware::from_fn(only_intake)),
        )
        .route(
            "/v1/consents/{id}/receipt",
            get(crate::consent::receipt::get).route_layer(middleware::from_fn(only_intake)),
        )
        .route("/v1/audit/records", get(crate::audit::api::records))
        .route(
            "/v1/audit/subject-search",
            post(crate::audit::api::subject_search).route_layer(middleware::from_fn(only_auditor)),
        )
        .route("/v1/audit/tree-head", get(crate::audit::api::tree_head))
        .route(
            "/v1/audit/proof/inclusion",
            get(crate::audit::api::inclusion),
        )
        .route(
            "/v1/audit/proof/consistency",
            get(crate::audit::api::consistency),
        )
        .route("/v1/audit/export", get(crate::audit::export::export))
        .route(
            "/v1/disclosures",
            post(crate::audit::disclosure::disclosures)
                .route_layer(middleware::from_fn(only_intake)),
        )
        .nest("/console", crate::console::router())
        .route("/console/", crate::console::home_route())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authn_and_limit,
        ))
        .layer(middleware::from_fn(framing))
        .layer(middleware::from_fn(observe));
    api.with_state(state)
}

/// Route layers that answer 403 `forbidden_role` before the body is read,
/// so a caller without the role learns nothing from body errors (the
/// handlers check the role again).
async fn only_intake(req: Request, next: Next) -> Response {
    guard(req, next, crate::party::Role::Intake).await
}

async fn only_auditor(req: Request, next: Next) -> Response {
    guard(req, next, crate::party::Role::Auditor).await
}

async fn guard(req: Request, next: Next, role: crate::party::Role) -> Response {
    let check = match req.extensions().get::<Principal>() {
        Some(p) => p.require(role),
        None => Err(AuthError::NoCertificate),
    };
    match check {
        Ok(()) => next.run(req).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The optional plain-HTTP operations listener: health and metrics only.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .with_state(state)
}

async fn not_found() -> ApiError {
    RequestError::NoSuchResource.into()
}

/// Request id, span, access log line and metrics for every request.
async fn observe(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map_or_else(fresh_request_id, str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let private = req.uri().path().starts_with("/v1/");
    let span = tracing::info_span!("request", request.id = %id, http.method = %method, route = %route, party.id = tracing::field::Empty);
    let start = Instant::now();
    let mut rsp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = rsp.status().as_u16();
    let problem = rsp
        .extensions()
        .get::<ProblemMarker>()
        .map(|p| p.0.as_str());
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            problem = problem.unwrap_or(""),
            "request finished"
        );
    });
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    metrics::counter!("samgate_http_requests_total", &labels).increment(1);
    metrics::histogram!("samgate_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        rsp.headers_mut().insert(REQUEST_ID, v);
    }
    // API answers name participants' consents and exchanges: no browser,
    // proxy or client cache keeps them (the console sets its own).
    if private
        && !rsp
            .headers()
            .contains_key(axum::http::header::CACHE_CONTROL)
    {
        rsp.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    rsp
}

/// Whether a caller's `X-Request-Id` may be used (DESIGN §10 "Client-chosen
/// strings"): `^[A-Za-z0-9._:-]{1,64}$` and no run of 6 or more digits, so
/// that it cannot carry a personnummer (or a date of birth) into every log
/// line and audit record. Anything else is replaced by a fresh id.
pub fn acceptable_request_id(v: &str) -> bool {
    let charset = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    let mut run = 0usize;
    let short_digit_runs = v.bytes().all(|b| {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        run < 6
    });
    (1..=64).contains(&v.len()) && charset && short_digit_runs
}

/// A fresh request id: a UUID (v4) that itself obeys
/// [`acceptable_request_id`], since a UUID's hex may hold six digits in a row.
fn fresh_request_id() -> String {
    for _ in 0..64 {
        let id = uuid::Uuid::new_v4().to_string();
        if acceptable_request_id(&id) {
            return id;
        }
    }
    // Practically unreachable; the digits then become letters g..p.
    uuid::Uuid::new_v4()
        .to_string()
        .chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from(b'g' + d as u8),
            None => c,
        })
        .collect()
}

/// Refuses ambiguous framing (request smuggling): both `Content-Length` and
/// `Transfer-Encoding`, or several different `Content-Length`s (DESIGN §9).
async fn framing(req: Request, next: Next) -> Response {
    let h = req.headers();
    let lengths: Vec<_> = h.get_all(http::header::CONTENT_LENGTH).iter().collect();
    let conflicting = lengths.windows(2).any(|w| matches!(w, [a, b] if a != b));
    let flagged = req
        .extensions()
        .get::<crate::http::framing::AmbiguousFlag>()
        .is_some();
    if flagged
        || (!lengths.is_empty() && h.contains_key(http::header::TRANSFER_ENCODING))
        || conflicting
    {
        return ApiError::from(RequestError::AmbiguousFraming).into_response();
    }
    next.run(req).await
}

/// Authenticates every request on the mTLS listener and applies the
/// per-party rate limit.
async fn authn_and_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    if let Some(e) = cross_site_refusal(&parts) {
        return ApiError::from(e).into_response();
    }
    let principal = match authenticate(&parts, state.live(), state.clock.now().date()) {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    tracing::Span::current().record("party.id", principal.party.as_str());
    if let Some(limiter) = &state.rate_limiter {
        if let Err(wait) = limiter.check(&principal.party) {
            return ApiError::from(RequestError::RateLimited {
                per_second: limiter.per_second(),
                retry_after: wait.as_secs().max(1),
            })
            .into_response();
        }
    }
    parts.extensions.insert::<Principal>(principal);
    // The handler's state is another clone: run it on the snapshot the
    // principal was resolved on, not on one a reload installed meanwhile.
    let live = state.live_arc();
    crate::state::REQUEST_LIVE
        .scope(live, next.run(Request::from_parts(parts, body)))
        .await
}

/// A browser presents a person's client certificate to every page that
/// asks, like a cookie: a request another site made it send (an image, a
/// no-cors form post) must not act or read in that person's name. Requests
/// the browser marks as cross-site or same-site (`Sec-Fetch-Site`), and
/// non-GET requests whose `Origin` is not this gateway, are refused; the one
/// exception is following a link to the console's start page. Agency
/// systems send neither header and are not affected.
fn cross_site_refusal(parts: &axum::http::request::Parts) -> Option<RequestError> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = header("sec-fetch-site");
    let foreign_site = matches!(fetch_site, Some("cross-site" | "same-site"));
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| header("host").map(str::to_owned));
    // A browser that says where a request comes from (`Sec-Fetch-Site`) is
    // believed; `Origin` decides only for those that do not. (The console's
    // `Referrer-Policy: no-referrer` makes Chromium send `Origin: null` on
    // its own form posts.)
    let foreign_origin = fetch_site.is_none()
        && parts.method != axum::http::Method::GET
        && header("origin").is_some_and(|o| {
            let o = o.strip_prefix("https://").unwrap_or(o);
            host.as_deref() != Some(o)
        });
    if !foreign_site && !foreign_origin {
        return None;
    }
    let start_page = parts.method == axum::http::Method::GET
        && header("sec-fetch-mode") == Some("navigate")
        && matches!(parts.uri.path(), "/console" | "/console/");
    if start_page && !foreign_origin {
        return None;
    }
    Some(RequestError::CrossSite)
}
