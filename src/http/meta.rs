//! The meta endpoints: health, readiness, metrics, the public keys (JWKS)
//! and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::RequestError;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API, the
/// repository's `openapi.json` compiled in (any authenticated party).
pub(crate) async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
        .into_response()
}

/// `GET /v1/keys`: the gateway's public keys as a JWKS (DESIGN §9): the
/// delivery key that signs `Samgate-Signature` and the audit key that signs
/// tree heads.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
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

pub(crate) async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.ping(Duration::from_secs(2)).await {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::from(RequestError::DatabaseUnreachable).into_response()
    }
}

pub(crate) async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    crate::observe::refresh(&state).await;
    let body = crate::telemetry::metrics_handle().render();
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}
