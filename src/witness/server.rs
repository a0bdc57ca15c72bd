//! The witness's HTTPS listener: TLS 1.2+ with client certificates chained to the
//! configured CA and, when configured, pinned by SPKI SHA-256 (the gateway's client
//! certificate). Only `POST /add-checkpoint` is served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::config::WitnessConfig;
use super::protocol::Witness;
use super::store::WitnessStore;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running witness server.
pub struct WitnessServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The witness (its key and store).
    pub witness: Arc<Witness>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WitnessServer {
    /// Opens the store, loads the keys and starts listening.
    pub async fn start(config: &WitnessConfig) -> Result<WitnessServer, String> {
        let signer = crate::keys::load_ed25519_private(&config.signing_key)
            .map_err(|e| format!("signing_key: {e}"))?;
        let store = WitnessStore::open(&config.database).await?;
        let logs: HashMap<String, [u8; 32]> = config
            .logs
            .iter()
            .map(|l| (l.origin.clone(), l.public_key))
            .collect();
        let witness = Arc::new(Witness::new(&config.name, signer, logs, store)?);
        let tls =
            crate::tls::server_config(&config.certificate, &config.private_key, &config.client_ca)
                .map_err(|e| e.to_string())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let app = axum::Router::new()
            .route("/add-checkpoint", axum::routing::post(add_checkpoint))
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .with_state(witness.clone());
        let (tx, rx) = watch::channel(false);
        let pins = config.client_pins.clone();
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), app, pins, rx));
        tracing::info!(witness = %config.name, listen = %addr, "witness listening (mTLS)");
        Ok(WitnessServer {
            addr,
            witness,
            shutdown: tx,
            task,
        })
    }

    /// Stops accepting and closes the store.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.witness.store().close().await;
    }
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    let a = w.add_checkpoint(&body).await;
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    pins: Vec<[u8; 32]>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pins = Arc::new(pins);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let app = app.clone();
                let pins = pins.clone();
                let mut stop = shutdown.clone();
                conns.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        return;
                    };
                    if !pins.is_empty() {
                        let pin = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(crate::tls::peer_spki_sha256);
                        if !pin.is_some_and(|p| pins.contains(&p)) {
                            tracing::warn!(%peer, "witness: client certificate is not pinned; connection closed");
                            return;
                        }
                    }
                    let svc = TowerToHyperService::new(app);
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        }
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
}
