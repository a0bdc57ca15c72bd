//! Serving: the mTLS accept loop (axum over rustls, peer certificate pinned
//! per connection), the optional plain-HTTP operations listener, and
//! graceful shutdown (stop accepting, drain within `shutdown_grace`, then let
//! the caller finish background work such as the final tree head).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::PeerCertificate;
use crate::connguard::{self, Activity, DeadlineBody, Watched};
use crate::http::framing::{AmbiguousFlag, HeadSniffer};
use crate::startup::StartError;
use crate::state::AppState;
use crate::tls;

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
                let app = crate::http::router::ops_router(state.unpinned());
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
        let app = crate::http::router::router(state.unpinned());
        let grace = cfg.shutdown_grace;
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(server_tls),
            app,
            state.clone(),
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

/// Connection-level limits, from `[server]` (DESIGN §10).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    body_timeout: Duration,
    idle_timeout: Duration,
    handshake_timeout: Duration,
    max_connections: usize,
}

/// What the connection tasks are told: keep serving, drain (finish the
/// request in flight, take no new one), or stop now (grace period over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serve,
    Drain,
    Stop,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let cfg = &state.config.server;
    let limits = Limits {
        header_timeout: cfg.header_timeout,
        body_timeout: cfg.body_timeout,
        idle_timeout: cfg.idle_timeout,
        handshake_timeout: cfg.tls_handshake_timeout,
        max_connections: cfg.max_connections,
    };
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serve);
    loop {
        // The permit is taken before accepting: beyond max_connections new
        // connections wait in the listen backlog, costing nothing here.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
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
                let state = state.clone();
                let phase = phase_rx.clone();
                tokio::spawn(async move {
                    serve_connection(tcp, acceptor, app, state, limits, phase).await;
                    drop(permit);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = phase_tx.send(Phase::Drain);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
        let _ = phase_tx.send(Phase::Stop);
    }
}

fn closed(reason: &'static str) {
    metrics::counter!("samgate_connections_closed_total", "reason" => reason).increment(1);
}

/// One connection: TLS handshake (with its deadline), the pin check before
/// any request is read, then HTTP under the watchdog of [`connguard`].
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    app: axum::Router,
    state: AppState,
    limits: Limits,
    mut phase: watch::Receiver<Phase>,
) {
    let mut tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake refused");
            closed("tls_refused");
            return;
        }
        Err(_) => {
            closed("tls_handshake_timeout");
            return;
        }
    };
    let pin = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(tls::peer_spki_sha256);
    // A certificate that chains to the CA but is pinned to no party (a
    // retired or stray one) gets no HTTP at all: closed before a byte of a
    // request is read.
    // Personal user certificates ([[user]], DESIGN §11) are pinned too. The
    // current snapshot, read unpinned: this state lives as long as the
    // connection, and a reload must reach its next request.
    let live = state.current_live();
    let known = |p: &[u8; 32]| live.pins.contains_key(p) || live.user_pins.contains_key(p);
    if pin.is_none_or(|p| !known(&p)) {
        tracing::info!("connection closed: client certificate not pinned to any party or user");
        closed("unpinned");
        let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
        return;
    }
    let activity = Activity::new();
    let flag = AmbiguousFlag::default();
    let flag2 = flag.clone();
    let act = activity.clone();
    let body_timeout = limits.body_timeout;
    let svc = tower::service_fn(move |req: http::Request<Incoming>| {
        let guard = act.request_started();
        let mut req = req.map(|b| axum::body::Body::new(DeadlineBody::new(b, body_timeout)));
        req.extensions_mut().insert(PeerCertificate(pin));
        if flag2.is_set() {
            req.extensions_mut().insert(flag2.clone());
        }
        let fut = app.clone().oneshot(req);
        async move {
            let rsp = fut.await?;
            // The request stays in flight until its body has been sent.
            Ok::<_, std::convert::Infallible>(rsp.map(move |b| {
                axum::body::Body::new(b.map_frame(move |f| {
                    let _ = &guard;
                    f
                }))
            }))
        }
    });
    let io = Watched::new(HeadSniffer::new(tls, flag), activity.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own HTTP/1 head timer is a backstop behind the watchdog (it
    // runs from the moment hyper waits for a head, idle or not, so it is set
    // to the longer of the two limits); without a timer it would be off.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.max(limits.idle_timeout));
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let tick = connguard::tick(limits.header_timeout, limits.idle_timeout);
    if *phase.borrow() != Phase::Serve {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = phase.changed() => {
                // The sender is gone once the accept loop has finished.
                if changed.is_err() {
                    return;
                }
                let now = *phase.borrow();
                match now {
                    Phase::Serve => {}
                    Phase::Drain => conn.as_mut().graceful_shutdown(),
                    Phase::Stop => return,
                }
            }
            _ = tokio::time::sleep(tick) => {
                if let Some(v) = activity.verdict(limits.header_timeout, limits.idle_timeout) {
                    tracing::debug!(reason = v.as_str(), "connection closed by the watchdog");
                    closed(v.as_str());
                    return;
                }
            }
        }
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
