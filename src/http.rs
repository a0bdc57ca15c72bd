//! The HTTP surface: the router (every route in one place), the layers that
//! wrap it (request id, authentication, rate limit, observation, framing
//! checks), the JSON body extractor, and the health/metrics endpoints.

use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::auth::{authenticate, Principal};
use crate::config::PartyId;
use crate::error::{ApiError, ProblemCode, ProblemMarker};
use crate::state::AppState;

/// The request id header, set on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id (from `X-Request-Id` if the caller sent a sane one, else a
/// fresh UUID). It goes into the span, the response and audit records.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

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
    guard(req, next, crate::config::Role::Intake).await
}

async fn only_auditor(req: Request, next: Next) -> Response {
    guard(req, next, crate::config::Role::Auditor).await
}

async fn guard(req: Request, next: Next, role: crate::config::Role) -> Response {
    let check = match req.extensions().get::<Principal>() {
        Some(p) => p.require(role),
        None => Err(ApiError::new(
            ProblemCode::Unauthenticated,
            "a client certificate is required",
        )),
    };
    match check {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
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
    ApiError::new(ProblemCode::NotFound, "no such resource")
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API, the
/// repository's `openapi.json` compiled in (any authenticated party).
async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}

/// `GET /v1/keys`: the gateway's public keys as a JWKS (DESIGN §9): the
/// delivery key that signs `Samgate-Signature` and the audit key that signs
/// tree heads.
async fn jwks(State(state): State<AppState>) -> Response {
    use base64::Engine;
    let jwk = |signer: &crate::keys::Ed25519Signer, purpose: &str| {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signer.public_key()),
            "kid": signer.key_id(),
            "use": "sig",
            "alg": "EdDSA",
            "samgate_purpose": purpose,
        })
    };
    Json(serde_json::json!({
        "keys": [
            jwk(&state.crypto.delivery_signer, "delivery"),
            jwk(&state.crypto.audit_signer, "audit"),
        ]
    }))
    .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.ping(Duration::from_secs(2)).await {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(ProblemCode::Unavailable, "the database is unreachable").into_response()
    }
}

async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    crate::observe::refresh(&state).await;
    let body = metrics_handle().render();
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // A second install (several gateways in one test process) is harmless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
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
        .get::<crate::framing::AmbiguousFlag>()
        .is_some();
    if flagged
        || (!lengths.is_empty() && h.contains_key(http::header::TRANSFER_ENCODING))
        || conflicting
    {
        return ApiError::new(
            ProblemCode::InvalidEnvelope,
            "ambiguous message framing (Content-Length with Transfer-Encoding, or conflicting lengths)",
        )
        .into_response();
    }
    next.run(req).await
}

/// Authenticates every request on the mTLS listener and applies the
/// per-party rate limit.
async fn authn_and_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let principal = match authenticate(&parts, &state) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    tracing::Span::current().record("party.id", principal.party.as_str());
    if let Some(limiter) = &state.rate_limiter {
        if let Err(wait) = limiter.check(&principal.party) {
            let mut e = ApiError::new(
                ProblemCode::RateLimited,
                format!("rate limit of {} requests/s exceeded", limiter.per_second),
            );
            e.retry_after = Some(wait.as_secs().max(1));
            return e.into_response();
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

/// Per-party token bucket: `n` requests/s, burst `2n`.
pub struct PartyRateLimiter {
    limiter: DefaultKeyedRateLimiter<PartyId>,
    per_second: u32,
}

impl PartyRateLimiter {
    /// `None` when `per_second` is 0 (off).
    pub fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_second,
        })
    }

    /// Ok, or how long until the next request would be allowed.
    pub fn check(&self, party: &PartyId) -> Result<(), Duration> {
        self.limiter.check_key(party).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

/// A JSON request body: `application/json` required (415), at most the
/// configured size (413), valid JSON (400 `malformed_json`) of the expected
/// shape (400 `invalid_envelope`, naming the path but never the value).
pub struct JsonBody<T> {
    /// The parsed value.
    pub value: T,
    /// The exact bytes received (for idempotency hashing).
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.server.max_body_bytes;
        check_json_content_type(req.headers())?;
        let raw = read_body(req.into_body(), limit).await?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// 415 unless the content type is JSON (`application/json` or `+json`).
pub fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "the request body must be application/json",
        ))
    }
}

/// Reads a body up to `limit` bytes (413 beyond).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ProblemCode::PayloadTooLarge,
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    })
}

/// Parses JSON into `T` with typed, value-free errors.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        ApiError::new(
            ProblemCode::MalformedJson,
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde's "missing field `x`" / "unknown field `x`" name only keys;
        // other messages can quote the offending value, so they are dropped.
        let what = if inner.starts_with("missing field") || inner.starts_with("unknown field") {
            inner
                .split(", expected")
                .next()
                .unwrap_or("invalid field")
                .to_owned()
        } else {
            "has the wrong type or value".to_owned()
        };
        let place = if path == "." {
            "the body".to_owned()
        } else {
            format!("`{path}`")
        };
        ApiError::new(ProblemCode::InvalidEnvelope, format!("{place}: {what}"))
            .with("errors", vec![serde_json::Value::String(path)])
    })
}

/// Problem for a request that needs a role the caller lacks (used where a
/// handler checks by hand).
pub fn forbidden(detail: &str) -> ApiError {
    ApiError::new(ProblemCode::ForbiddenRole, detail.to_owned())
}

/// Status helper for handlers that answer `201 Created`.
pub fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}
