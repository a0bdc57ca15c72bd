//! Request extractors: the request id and the JSON body (content type,
//! size limit, value-free parse errors); and the `201 Created` answer.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use super::error::{shown_key, shown_path, RequestError};
use crate::error::ApiError;
use crate::state::AppState;

/// The request id header, set on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id (from `X-Request-Id` if the caller sent a sane one, else a
/// fresh UUID). It goes into the span, the response and audit records.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

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
pub fn check_json_content_type(headers: &HeaderMap) -> Result<(), RequestError> {
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
        Err(RequestError::NotJson)
    }
}

/// Reads a body up to `limit` bytes (413 beyond; 408 `request_timeout`
/// when it does not arrive within `[server] body_timeout`, DESIGN §10).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if crate::connguard::is_body_timeout(&e) {
            RequestError::BodyTimeout
        } else {
            RequestError::TooLarge { limit }
        }
    })
}

/// Parses JSON into `T` with typed, value-free errors.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, RequestError> {
    // Fast path: one pass straight into `T`. Only a body that fails it (or
    // repeats a key, which the one pass refuses) takes the two passes below,
    // which name the failing place; both accept the same valid bodies.
    if let Ok(v) = serde_json::from_slice::<T>(raw) {
        return Ok(v);
    }
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| RequestError::MalformedJson {
            line: e.line(),
            column: e.column(),
        })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = shown_path(e.path());
        let inner = e.inner().to_string();
        // serde's "missing field `x`" / "unknown field `x`" name only keys
        // (an unknown one is the client's, so it is shown only when it looks
        // like a field name); other messages can quote the offending value,
        // so they are dropped.
        let what = if inner.starts_with("missing field") {
            inner
                .split(", expected")
                .next()
                .unwrap_or("invalid field")
                .to_owned()
        } else if inner.starts_with("unknown field") {
            let key = inner.split('`').nth(1).unwrap_or_default();
            format!("unknown field `{}`", shown_key(key))
        } else {
            "has the wrong type or value".to_owned()
        };
        RequestError::Shape { path, what }
    })
}

/// Status helper for handlers that answer `201 Created`.
pub fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}
