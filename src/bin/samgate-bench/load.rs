//! The load generator: HTTP/1.1 over rustls (our own client certificate),
//! one hyper connection per worker.
//!
//! Three shapes:
//! - closed loop, keep-alive: `conns` workers send back to back (max
//!   throughput);
//! - open loop, keep-alive: requests are scheduled at fixed intervals
//!   (`start + i / rate`) whatever the answers do, and each latency is
//!   measured from the request's intended send time, so a stall is charged
//!   to every request that should have gone out during it (no coordinated
//!   omission). The only thing not charged is the timer's own granularity
//!   (tokio wakes on 1 ms ticks): a worker that slept until its slot and
//!   woke up to [`TIMER_SLOP`] late measures from when it woke; lateness
//!   beyond that, and any wait for a busy connection, is charged;
//! - closed loop with a new TCP + TLS connection (full handshake, no
//!   resumption) per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::ServerName;

/// Timer granularity not charged to the system under test.
pub const TIMER_SLOP: Duration = Duration::from_millis(1);
/// A request taking longer than this counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an open-loop run may overrun its schedule before the rest of
/// the schedule is dropped (and reported as not sent).
const OVERRUN: Duration = Duration::from_secs(5);

/// Where and what to send.
#[derive(Clone)]
pub struct Driver {
    /// The proxy's address.
    pub addr: SocketAddr,
    /// TLS name to verify the proxy's certificate against.
    pub server_name: ServerName<'static>,
    /// Keep-alive client config (our client certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// The same without session resumption (every handshake full).
    pub tls_fresh: Arc<rustls::ClientConfig>,
    /// Request path.
    pub path: String,
    /// Request body (the same bytes for every contender).
    pub body: Bytes,
}

/// What one measurement saw.
#[derive(Clone)]
pub struct Stats {
    /// Latency of answered requests, microseconds.
    pub hist: Histogram<u64>,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers.
    pub non2xx: u64,
    /// Transport failures and timeouts.
    pub failed: u64,
    /// Scheduled but never sent (open loop overran its schedule).
    pub not_sent: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Timer wake-up lateness of the open loop, microseconds.
    pub lag: Histogram<u64>,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
}

impl Stats {
    fn new() -> anyhow::Result<Stats> {
        Ok(Stats {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            ok: 0,
            non2xx: 0,
            failed: 0,
            not_sent: 0,
            elapsed: Duration::ZERO,
            lag: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            first_error: None,
        })
    }

    fn merge(&mut self, o: &Stats) -> anyhow::Result<()> {
        self.hist.add(&o.hist)?;
        self.lag.add(&o.lag)?;
        self.ok += o.ok;
        self.non2xx += o.non2xx;
        self.failed += o.failed;
        self.not_sent += o.not_sent;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        Ok(())
    }

    /// Answered requests per second (2xx only).
    pub fn rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    /// A latency percentile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn record(&mut self, outcome: Result<u16, String>, latency: Duration) {
        match outcome {
            Ok(status) => {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                let _ = self.hist.record(us.max(1));
                if (200..300).contains(&status) {
                    self.ok += 1;
                } else {
                    self.non2xx += 1;
                    if self.first_error.is_none() {
                        self.first_error = Some(format!("HTTP {status}"));
                    }
                }
            }
            Err(e) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

impl Driver {
    /// A new connection (TCP, TLS handshake, HTTP/1.1).
    pub async fn connect(&self, fresh: bool) -> Result<Sender, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let cfg = if fresh { &self.tls_fresh } else { &self.tls };
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One request on `sender`: its status, after the body was read.
    pub async fn send(&self, sender: &mut Sender) -> Result<u16, String> {
        let fut = async {
            sender.ready().await.map_err(|e| format!("ready: {e}"))?;
            let req = hyper::Request::post(self.path.as_str())
                .header(hyper::header::HOST, "localhost")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(self.body.clone()))
                .map_err(|e| e.to_string())?;
            let rsp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = rsp.status().as_u16();
            rsp.into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?;
            Ok(status)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    }

    /// One request on a keep-alive connection held in `slot` (reconnecting
    /// when there is none or the last one broke).
    async fn send_keepalive(&self, slot: &mut Option<Sender>) -> Result<u16, String> {
        let mut sender = match slot.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect(false).await?,
        };
        let r = self.send(&mut sender).await;
        if r.is_ok() {
            *slot = Some(sender);
        }
        r
    }

    /// One request on a brand-new connection, closed afterwards.
    async fn send_fresh(&self) -> Result<u16, String> {
        let mut sender = self.connect(true).await?;
        self.send(&mut sender).await
    }

    /// Closed loop for `duration` with `conns` workers.
    pub async fn closed(
        &self,
        conns: usize,
        duration: Duration,
        fresh: bool,
    ) -> anyhow::Result<Stats> {
        let start = Instant::now();
        let end = start + duration;
        let mut tasks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let d = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut st = Stats::new()?;
                let mut slot = None;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let r = if fresh {
                        d.send_fresh().await
                    } else {
                        d.send_keepalive(&mut slot).await
                    };
                    st.record(r, t0.elapsed());
                }
                anyhow::Ok(st)
            }));
        }
        merged(tasks, start).await
    }

    /// Open loop at `rate` requests/s for `duration` over `conns` keep-alive
    /// connections.
    pub async fn open(&self, conns: usize, duration: Duration, rate: f64) -> anyhow::Result<Stats> {
        let total_reqs = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        let interval_ns = 1e9 / rate.max(1.0);
        // Open the connections first so the handshakes are not measured.
        let mut senders = Vec::with_capacity(conns);
        for _ in 0..conns {
            senders.push(self.connect(false).await.ok());
        }
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now() + Duration::from_millis(20);
        let deadline = start + duration + OVERRUN;
        let mut tasks = Vec::with_capacity(conns);
        for slot in senders {
            let d = self.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let mut st = Stats::new()?;
                let mut slot = slot;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total_reqs {
                        break;
                    }
                    let intended = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
                    let now = Instant::now();
                    if now > deadline {
                        st.not_sent += 1;
                        continue;
                    }
                    let charged_from = if intended > now {
                        tokio::time::sleep_until(intended.into()).await;
                        let woke = Instant::now();
                        let lag = woke.saturating_duration_since(intended);
                        let _ = st
                            .lag
                            .record(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX).max(1));
                        intended + lag.min(TIMER_SLOP)
                    } else {
                        intended
                    };
                    let r = d.send_keepalive(&mut slot).await;
                    st.record(r, charged_from.elapsed());
                }
                anyhow::Ok(st)
            }));
        }
        merged(tasks, start).await
    }
}

/// The workers' statistics together, timed from `start`.
async fn merged(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Stats>>>,
    start: Instant,
) -> anyhow::Result<Stats> {
    let mut total = Stats::new()?;
    for t in tasks {
        total.merge(&t.await.context("load worker")??)?;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}
