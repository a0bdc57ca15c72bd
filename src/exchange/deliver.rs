//! Delivery to recipient endpoints: the pooled HTTPS client (our client
//! certificate, recipients verified against `outbound_ca`) and the detached
//! signature in `Samgate-Signature` (DESIGN §5, §9).
//!
//! The signature is a detached compact JWS (RFC 7515 Appendix F) made with
//! the delivery key (`keys/delivery.pem`, published at `GET /v1/keys`):
//! `BASE64URL(header) + ".." + BASE64URL(sig)` where the signing input is
//! `BASE64URL(header) + "." + BASE64URL(body bytes)`, header
//! `{"alg":"EdDSA","kid":<delivery key id>,"typ":"samgate-delivery"}`. A
//! recipient verifies by base64url-encoding the exact bytes it received.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine;

use crate::config::Config;
use crate::keys::Ed25519Signer;
use crate::startup::StartError;

/// Header carrying the detached JWS.
pub const SIGNATURE_HEADER: &str = "samgate-signature";
/// Header carrying the exchange id (recipients de-duplicate on it).
pub const EXCHANGE_ID_HEADER: &str = "samgate-exchange-id";

/// The outbound HTTPS clients: one per recipient with a pinned endpoint
/// certificate (`endpoint_certificate_sha256`, DESIGN §10), each verifying
/// the chain to `outbound_ca` AND the pin, and a chain-only client for
/// recipients configured without a pin. Every delivery picks its client with
/// [`Clients::for_delivery`].
///
/// The set belongs to one configuration snapshot ([`crate::state::Live`]):
/// a reload that adds a party, changes its pin or its endpoint builds the
/// set again, so a delivery is always checked against the pins in force.
/// Clients whose party and pin did not change are kept (with their pooled
/// connections).
#[derive(Clone)]
pub struct Clients {
    /// Party id → where and how its deliveries go.
    by_party: HashMap<String, Target>,
}

/// A recipient's endpoint in one snapshot, its pin and its client.
#[derive(Clone)]
struct Target {
    endpoint: String,
    pin: Option<[u8; 32]>,
    client: reqwest::Client,
}

impl Clients {
    /// Where and how a delivery to `recipient` goes under this snapshot: the
    /// party's endpoint as configured now, with its pinned client (or the
    /// chain-only one when the party has no pin). A party this snapshot does
    /// not know, or knows without an endpoint (a reload removed it while a
    /// message or a notice waited), has none: the delivery fails rather
    /// than leave with a weaker check, to a URL the configuration no longer
    /// names, or under the pin of whichever party now has its old URL.
    pub fn for_delivery(&self, recipient: &str) -> Result<(&reqwest::Client, &str), DeliveryError> {
        self.by_party
            .get(recipient)
            .map(|t| (&t.client, t.endpoint.as_str()))
            .ok_or(DeliveryError::NotConfigured)
    }

    /// The clients for the parties of `live` (a configuration snapshot),
    /// with the TLS files and timeouts of the `running` process (those
    /// sections take effect only after a restart). Clients of `previous`
    /// whose party kept its pin are reused.
    pub fn build(
        running: &Config,
        live: &Config,
        previous: Option<&Clients>,
    ) -> Result<Clients, StartError> {
        let s = &running.server;
        let mut unpinned: Option<reqwest::Client> = previous.and_then(|p| {
            p.by_party
                .values()
                .find(|t| t.pin.is_none())
                .map(|t| t.client.clone())
        });
        let mut by_party = HashMap::new();
        for p in &live.parties {
            let Some(endpoint) = &p.endpoint else {
                continue;
            };
            let pin = p.endpoint_certificate_sha256;
            let kept = previous
                .and_then(|c| c.by_party.get(p.id.as_str()))
                .filter(|t| t.pin == pin)
                .map(|t| t.client.clone());
            let client = match (kept, pin) {
                (Some(client), _) => client,
                (None, Some(pin)) => {
                    let tls = crate::tls::pinned_client_config(
                        &s.outbound_ca,
                        &s.outbound_certificate,
                        &s.outbound_private_key,
                        vec![pin],
                    )?;
                    build(running, tls)?
                }
                (None, None) => match &unpinned {
                    Some(client) => client.clone(),
                    None => {
                        let tls = crate::tls::client_config(
                            &s.outbound_ca,
                            &s.outbound_certificate,
                            &s.outbound_private_key,
                        )?;
                        let client = build(running, tls)?;
                        unpinned = Some(client.clone());
                        client
                    }
                },
            };
            if pin.is_none() {
                tracing::warn!(party = %p.id, "recipient without endpoint_certificate_sha256: its endpoint is checked against outbound_ca only");
            }
            by_party.insert(
                p.id.to_string(),
                Target {
                    endpoint: endpoint.clone(),
                    pin,
                    client,
                },
            );
        }
        Ok(Clients { by_party })
    }
}

fn build(config: &Config, tls: rustls::ClientConfig) -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(config.delivery.timeout)
        .connect_timeout(config.delivery.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StartError::Key {
            key: "server.outbound_certificate".into(),
            reason: e.to_string(),
        })
}

/// The detached JWS over `body`.
pub fn sign_detached(signer: &Ed25519Signer, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header =
        serde_json::json!({"alg": "EdDSA", "kid": signer.key_id(), "typ": "samgate-delivery"});
    let header_b64 = b64.encode(serde_json::to_vec(&header).unwrap_or_default());
    let input = format!("{header_b64}.{}", b64.encode(body));
    let sig = signer.sign(input.as_bytes());
    format!("{header_b64}..{}", b64.encode(sig))
}

/// Verifies a detached JWS against the body (for recipients and tests).
pub fn verify_detached(public_key: &[u8; 32], jws: &str, body: &[u8]) -> bool {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jws.split('.');
    let (Some(h), Some(""), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(sig) = b64.decode(s) else { return false };
    let input = format!("{h}.{}", b64.encode(body));
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(input.as_bytes(), &sig)
        .is_ok()
}

/// Largest reply read from a recipient.
pub const MAX_REPLY: usize = 1024 * 1024;

/// What a recipient answered.
#[derive(Debug)]
pub struct Delivered {
    /// HTTP status.
    pub status: u16,
    /// Content type of the reply.
    pub json: bool,
    /// The reply body.
    pub body: Bytes,
}

/// Why a delivery failed (never contains the body).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Connection, TLS or timeout.
    #[error("recipient unreachable: {0}")]
    Transport(String),
    /// Non-2xx answer.
    #[error("recipient answered HTTP {0}")]
    Status(u16),
    /// The recipient is not a party of the configuration in force (a
    /// reload removed it): nothing is sent.
    #[error("recipient is not configured")]
    NotConfigured,
}

const CONNECT_FAILED: &str = "connection failed";

impl DeliveryError {
    /// Whether the message may have reached the recipient although it was
    /// not acknowledged: the connection was made and then timed out or
    /// broke. A refused connection and a definite non-2xx answer did not
    /// deliver it. Revocation notices count such an exchange as received
    /// (DESIGN §13: the party may hold the data).
    pub fn may_have_arrived(&self) -> bool {
        matches!(self, DeliveryError::Transport(kind) if kind != CONNECT_FAILED)
    }
}

/// POSTs the exact body bytes with the signature and exchange id headers.
pub async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    exchange_id: &str,
    signature: &str,
    body: Bytes,
) -> Result<Delivered, DeliveryError> {
    let rsp = client
        .post(endpoint)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(EXCHANGE_ID_HEADER, exchange_id)
        .body(body)
        .send()
        .await
        .map_err(|e| DeliveryError::Transport(without_url(&e)))?;
    let status = rsp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(DeliveryError::Status(status));
    }
    let json = rsp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
    // The reply is read up to MAX_REPLY bytes; a larger one is dropped
    // (the delivery itself succeeded; the reply is then withheld as not JSON).
    let mut rsp = rsp;
    let mut buf = Vec::new();
    let mut json = json;
    while let Some(chunk) = rsp
        .chunk()
        .await
        .map_err(|e| DeliveryError::Transport(without_url(&e)))?
    {
        if buf.len() + chunk.len() > MAX_REPLY {
            buf.clear();
            json = false;
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    let body = Bytes::from(buf);
    Ok(Delivered { status, json, body })
}

fn without_url(e: &reqwest::Error) -> String {
    // A connect error (TCP, TLS, a connect timeout) first: the message
    // certainly did not leave. A timeout or break after that may have
    // delivered it (see [`DeliveryError::may_have_arrived`]).
    let kind = if e.is_connect() {
        CONNECT_FAILED
    } else if e.is_timeout() {
        "timeout"
    } else {
        "transport error"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/test-vectors/delivery-signature.json`, made with Python's
    /// `cryptography` (an independent implementation) and verified by the
    /// recipient kit in `examples/`.
    #[derive(serde::Deserialize)]
    struct Vector {
        private_key_pkcs8_pem: String,
        public_key_pem: String,
        kid: String,
        body: String,
        samgate_signature: String,
        tampered_body: String,
    }

    fn vector() -> Vector {
        serde_json::from_str(include_str!(
            "../../docs/test-vectors/delivery-signature.json"
        ))
        .unwrap()
    }

    #[test]
    fn the_published_delivery_signature_vector_is_what_the_gateway_signs() {
        let v = vector();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.pem");
        crate::keys::write_secret_file(&path, v.private_key_pkcs8_pem.as_bytes()).unwrap();
        let signer = crate::keys::load_ed25519_private(&path).unwrap();
        assert_eq!(signer.key_id(), v.kid);
        assert_eq!(
            sign_detached(&signer, v.body.as_bytes()),
            v.samgate_signature
        );

        let public = dir.path().join("delivery.pub.pem");
        std::fs::write(&public, &v.public_key_pem).unwrap();
        let key = crate::keys::load_public_key_pem(&public).unwrap();
        assert_eq!(key.key_id(), v.kid);
        let raw: [u8; 32] = key.raw.as_slice().try_into().unwrap();
        assert!(verify_detached(
            &raw,
            &v.samgate_signature,
            v.body.as_bytes()
        ));
        assert!(!verify_detached(
            &raw,
            &v.samgate_signature,
            v.tampered_body.as_bytes()
        ));
    }
}
