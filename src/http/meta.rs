//! The meta endpoints: health, readiness, metrics, the public keys (JWKS)
//! and the OpenAPI document.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::{ApiError, ProblemCode};
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
        ApiError::new(ProblemCode::Unavailable, "the database is unreachable").into_response()
    }
}

pub(crate) async fn metrics_endpoint(State(state): State<AppState>) -> Response {
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
