//! The demo's recipient endpoints: real HTTPS servers on loopback, in the
//! same process, one per receiving party. Each requires the gateway's own
//! client certificate (chained to the CA and pinned by SPKI), records what
//! it received, de-duplicates on the exchange id (DESIGN §5: delivery is at
//! least once), and answers a referral with the remissgrupp's decision.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::DemoError;

/// One delivery as the recipient saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The JSON body (`{exchange_id, from, type, purpose, subject, consent_id, payload}`).
    pub body: Value,
    /// `Samgate-Signature`: `None` if absent, else whether the detached JWS
    /// verifies over the body with the gateway's delivery key.
    pub signature_valid: Option<bool>,
    /// The `Samgate-Exchange-Id` header.
    pub exchange_id_header: Option<String>,
}

impl Delivery {
    /// The `exchange_id` of the body.
    pub fn exchange_id(&self) -> Option<&str> {
        self.body.get("exchange_id").and_then(Value::as_str)
    }
}

struct Shared {
    party: String,
    delivery_key: [u8; 32],
    received: Mutex<Vec<Delivery>>,
}

/// A running recipient endpoint.
pub struct Inbox {
    /// The receiving party.
    pub party: String,
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl Inbox {
    /// Starts the endpoint of `party` on an ephemeral loopback port with its
    /// server certificate `pki/<party>-server.pem`; only the holder of
    /// `pki/gateway-client.pem` may connect.
    pub async fn start(dir: &Path, party: &str) -> Result<Inbox, DemoError> {
        let tls = crate::tls::server_config(
            &dir.join(format!("pki/{party}-server.pem")),
            &dir.join(format!("pki/{party}-server.key")),
            &dir.join("pki/ca.pem"),
        )?;
        let gateway_pin = crate::tls::load_certs(&dir.join("pki/gateway-client.pem"))?
            .first()
            .and_then(crate::tls::peer_spki_sha256)
            .ok_or_else(|| DemoError::Setup("pki/gateway-client.pem does not parse".into()))?;
        let delivery_key: [u8; 32] =
            crate::keys::load_public_key_pem(&dir.join("keys/delivery.pub.pem"))
                .ok()
                .and_then(|k| k.raw.as_slice().try_into().ok())
                .ok_or_else(|| DemoError::Setup("keys/delivery.pub.pem is unusable".into()))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| DemoError::Setup(format!("recipient {party}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::Setup(format!("recipient {party}: {e}")))?;
        let shared = Arc::new(Shared {
            party: party.to_owned(),
            delivery_key,
            received: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/inbox", axum::routing::post(inbox))
            .with_state(shared.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let app = app.clone();
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let pin = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(crate::tls::peer_spki_sha256);
                            if pin != Some(gateway_pin) {
                                // Chained to the CA but not the gateway: refuse.
                                return;
                            }
                            let svc = hyper_util::service::TowerToHyperService::new(app);
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                        });
                    }
                    _ = stopped.notified() => break,
                }
            }
        });
        Ok(Inbox {
            party: party.to_owned(),
            addr,
            shared,
            stop,
        })
    }

    /// The delivery of one exchange, if it arrived.
    pub fn delivery(&self, exchange_id: &str) -> Option<Delivery> {
        self.shared.received.lock().ok().and_then(|v| {
            v.iter()
                .find(|d| d.exchange_id() == Some(exchange_id))
                .cloned()
        })
    }

    /// Every delivery of a message type (e.g. `consent-revoked` notices).
    pub fn of_type(&self, ty: &str) -> Vec<Delivery> {
        self.shared
            .received
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|d| d.body.get("type").and_then(Value::as_str) == Some(ty))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many distinct exchanges arrived.
    pub fn count(&self) -> usize {
        self.shared.received.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.notify_waiters();
    }
}

async fn inbox(State(shared): State<Arc<Shared>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let delivery = Delivery {
        signature_valid: header("samgate-signature")
            .map(|jws| crate::exchange::deliver::verify_detached(&shared.delivery_key, &jws, &raw)),
        exchange_id_header: header("samgate-exchange-id"),
        body,
    };
    if let Ok(mut received) = shared.received.lock() {
        let id = delivery.exchange_id().map(str::to_owned);
        // A repeated delivery of the same exchange is acknowledged, not kept twice.
        if id.is_none() || !received.iter().any(|d| d.exchange_id() == id.as_deref()) {
            received.push(delivery.clone());
        }
    }
    match reply_to(&shared.party, &delivery.body) {
        Some(reply) => (StatusCode::OK, axum::Json(reply)).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

/// The remissgrupp (`sfk-kalmar`) answers a referral with its decision, a
/// `referral` message back to the referrer (DESIGN §9 "Replies"); every other
/// delivery is acknowledged with an empty 200.
fn reply_to(party: &str, body: &Value) -> Option<Value> {
    if party != "sfk-kalmar" || body.get("type").and_then(Value::as_str) != Some("referral") {
        return None;
    }
    let referral_id = body
        .pointer("/payload/referral_id")
        .cloned()
        .unwrap_or(Value::Null);
    Some(json!({
        "type": "referral",
        "payload": {
            "referral_id": referral_id,
            "decision": "accepted",
            "suggested_measure": "group-activity",
        }
    }))
}
