//! Serving: the mTLS accept loop (axum over rustls, peer certificate pinned
//! per connection), the optional plain-HTTP operations listener, and
//! graceful shutdown (stop accepting, drain within `shutdown_grace`, then let
//! the caller finish background work such as the final tree head).

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::PeerCertificate;
use crate::framing::{AmbiguousFlag, HeadSniffer};
use crate::state::{AppState, StartError};
use crate::tls;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running gateway.
pub struct Gateway {
    /// The bound mTLS address (the real port when the config said 0).
    pub addr: SocketAddr,
    /// The bound operations address, if configured.
    pub ops_addr: Option<SocketAddr>,
    /// The state (tests reach the store and the clock through it).
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    ops_task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Binds the listeners and starts serving in the background.
    pub async fn start(state: AppState) -> Result<Gateway, StartError> {
        let cfg = &state.config.server;
        let server_tls = tls::server_config(&cfg.certificate, &cfg.private_key, &cfg.client_ca)?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
        let (tx, rx) = watch::channel(false);

        let (ops_addr, ops_task) = match cfg.metrics_listen {
            None => (None, None),
            Some(ops) => {
                let l = TcpListener::bind(ops)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: ops.to_string(),
                        source,
                    })?;
                let bound = l.local_addr().ok();
                let app = crate::http::ops_router(state.unpinned());
                let mut rx2 = rx.clone();
                let task = tokio::spawn(async move {
                    let _ = axum::serve(l, app)
                        .with_graceful_shutdown(async move {
                            let _ = rx2.changed().await;
                        })
                        .await;
                });
                (bound, Some(task))
            }
        };

        let worker = tokio::spawn(crate::exchange::outbox::run(state.unpinned()));
        let cosigners = state
            .witnesses
            .spawn(&state.store, &state.audit.subscribe_heads());
        if let Ok(mut bg) = state.background.lock() {
            bg.push(worker);
            bg.extend(cosigners);
        }
        let app = crate::http::router(state.unpinned());
        let grace = cfg.shutdown_grace;
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(server_tls),
            app,
            rx,
            grace,
        ));
        tracing::info!(listen = %addr, "samgate listening (mTLS)");
        crate::observe::log_start(&state);
        Ok(Gateway {
            addr,
            ops_addr,
            state,
            shutdown: tx,
            task,
            ops_task,
        })
    }

    /// Stops accepting, waits for in-flight requests (up to the grace
    /// period), then runs the state's shutdown work (final tree head).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(t) = self.ops_task {
            let _ = t.await;
        }
        self.state.shutdown().await;
    }

    /// Stops immediately without draining or final work: simulates a crash
    /// in tests (the process-level equivalent is `kill -9`).
    pub fn abort(self) {
        self.task.abort();
        if let Some(t) = self.ops_task {
            t.abort();
        }
        self.state.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let pin = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(tls::peer_spki_sha256);
                    let flag = AmbiguousFlag::default();
                    let flag2 = flag.clone();
                    let svc = app.map_request(move |mut req: http::Request<Incoming>| {
                        req.extensions_mut().insert(PeerCertificate(pin));
                        if flag2.is_set() {
                            req.extensions_mut().insert(flag2.clone());
                        }
                        req
                    });
                    let io = HeadSniffer::new(tls, flag);
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
