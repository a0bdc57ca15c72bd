//! The upstream recipient every contender forwards to: a minimal HTTPS
//! server (hyper, HTTP/1.1 and h2, rustls) that requires the gateway's
//! client certificate, reads the body and answers `200` with an empty body.
//! An empty reply keeps samgate's reply processing out of the measurement
//! (no reverse-route message), and nginx passes it through unchanged.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// Starts the upstream on `addr` with the party's server certificate and
/// returns the bound address.
pub async fn start(dir: &Path, party: &str, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let tls = samgate::tls::server_config(
        &dir.join(format!("pki/{party}-server.pem")),
        &dir.join(format!("pki/{party}-server.key")),
        &dir.join("pki/ca.pem"),
    )
    .context("upstream TLS configuration")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .context("binding the upstream")?;
    let local = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(inbox);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    Ok(local)
}

async fn inbox(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    // Read (and drop) the whole body, as a real recipient would.
    let _ = req.into_body().collect().await?;
    Ok(Response::new(Full::new(Bytes::new())))
}
