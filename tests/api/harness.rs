//! The test harness: a real gateway over mTLS on an ephemeral port, with the
//! working set written by `samgate init` (the same library code), its own
//! database (a temp SQLite file or a fresh PostgreSQL schema), and real HTTPS
//! recipient servers on loopback that record what they receive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use samgate::config::Config;
use samgate::http::server::Gateway;
use samgate::state::AppState;
use serde_json::Value;
use tempfile::TempDir;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server URL for tests, or None when it is absent and not
/// required (a developer machine without PostgreSQL). CI sets
/// `SAMGATE_REQUIRE_POSTGRES=1`, so there a missing server fails the run.
pub async fn postgres_url() -> Option<String> {
    let url = std::env::var("SAMGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let ok = tokio::time::timeout(Duration::from_secs(3), async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&url).await
    })
    .await;
    match ok {
        Ok(Ok(_)) => Some(url),
        _ => {
            assert!(
                std::env::var("SAMGATE_REQUIRE_POSTGRES").is_err(),
                "PostgreSQL at {url} is required (SAMGATE_REQUIRE_POSTGRES) but unreachable"
            );
            eprintln!("PostgreSQL unreachable at {url}: skipping the postgres variant locally");
            None
        }
    }
}

/// A storage URL for a fresh, empty database of the given kind.
pub async fn fresh_db_url(db: Db, dir: &Path) -> Option<String> {
    match db {
        Db::Sqlite => Some(format!(
            "sqlite://{}",
            dir.join("data/samgate.db").display()
        )),
        Db::Postgres => {
            let base = postgres_url().await?;
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            use sqlx::Connection;
            let mut conn = sqlx::AnyConnection::connect(&base).await.ok()?;
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .ok()?;
            let sep = if base.contains('?') { '&' } else { '?' };
            Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
        }
    }
}

/// Captured log output of the whole test process (for the PII scan).
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,h2=info,rustls=info,sqlx=warn",
            ))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        buf
    })
    .clone()
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every textual form of a personnummer (10 and 12 digits, with and without
/// separator), for scanning logs, responses and database files.
pub fn pnr_forms(canonical12: &str) -> Vec<String> {
    let short = &canonical12[2..];
    vec![
        canonical12.to_owned(),
        format!("{}-{}", &canonical12[..8], &canonical12[8..]),
        short.to_owned(),
        format!("{}-{}", &short[..6], &short[6..]),
    ]
}

/// Asserts that no captured log line contains any form of these numbers.
pub fn assert_logs_clean(numbers: &[&str]) {
    let logs = captured_logs();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    for n in numbers {
        for form in pnr_forms(n) {
            assert!(
                !text.contains(&form),
                "a log line contains a personnummer form"
            );
        }
    }
}

/// A request a recipient received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How a recipient answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub delay: Duration,
}

impl Default for Reply {
    fn default() -> Self {
        Self {
            status: 200,
            body: None,
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct RecipientInner {
    received: Mutex<Vec<Received>>,
    replies: Mutex<Vec<Reply>>,
    default_reply: Mutex<Reply>,
    /// While set, connections are closed at once (the recipient is down).
    down: std::sync::atomic::AtomicBool,
    /// Requests that reached the inbox, counted before any reply delay.
    arrivals: std::sync::atomic::AtomicUsize,
}

/// A real HTTPS recipient on loopback that requires the gateway's client
/// certificate and records every request.
#[derive(Clone)]
pub struct Recipient {
    pub addr: SocketAddr,
    inner: Arc<RecipientInner>,
}

impl Recipient {
    /// Starts on `addr` (port 0 for any) with the party's server certificate.
    pub async fn start(dir: &Path, party: &str, addr: SocketAddr) -> Recipient {
        let tls = samgate::tls::server_config(
            &dir.join(format!("pki/{party}-server.pem")),
            &dir.join(format!("pki/{party}-server.key")),
            &dir.join("pki/ca.pem"),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(RecipientInner::default());
        let app = axum::Router::new()
            .route("/inbox", axum::routing::post(recipient_inbox))
            .with_state(inner.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let inner_accept = inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Ok((tcp, _)) = listener.accept() => {
                        if inner_accept.down.load(std::sync::atomic::Ordering::SeqCst) {
                            drop(tcp);
                            continue;
                        }
                        let acceptor = acceptor.clone();
                        let app = app.clone();
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let svc = hyper_util::service::TowerToHyperService::new(app);
                            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                .await;
                        });
                    }
                }
            }
        });
        Recipient { addr, inner }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Requests that reached the inbox so far (also those still being
    /// answered after a reply delay).
    pub fn arrivals(&self) -> usize {
        self.inner
            .arrivals
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Queue one reply (used before the default).
    pub fn push_reply(&self, r: Reply) {
        self.inner.replies.lock().unwrap().push(r);
    }

    /// Takes the recipient down (connections refused at once) or back up.
    pub fn set_down(&self, down: bool) {
        self.inner
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// The reply used when none is queued.
    pub fn set_default_reply(&self, r: Reply) {
        *self.inner.default_reply.lock().unwrap() = r;
    }
}

async fn recipient_inbox(
    State(inner): State<Arc<RecipientInner>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if inner.down.load(std::sync::atomic::Ordering::SeqCst) {
        // A connection kept alive from before it went down.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    inner
        .arrivals
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let reply = {
        let mut q = inner.replies.lock().unwrap();
        if q.is_empty() {
            inner.default_reply.lock().unwrap().clone()
        } else {
            q.remove(0)
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if (200..300).contains(&reply.status) {
        inner
            .received
            .lock()
            .unwrap()
            .push(Received { headers, body });
    }
    let status = StatusCode::from_u16(reply.status).unwrap();
    match reply.body {
        Some(v) => (status, axum::Json(v)).into_response(),
        None => status.into_response(),
    }
}

/// A gateway under test with its recipients.
pub struct TestGateway {
    pub dir: TempDir,
    pub config: Config,
    pub gw: Option<Gateway>,
    pub recipients: HashMap<String, Recipient>,
}

impl TestGateway {
    /// `samgate init` into a temp dir, fresh database, recipients, gateway.
    /// None when the backend is unavailable locally (never in CI).
    pub async fn spawn(db: Db) -> Option<TestGateway> {
        Self::spawn_with(db, |_| {}).await
    }

    /// Like [`spawn`], letting the test adjust the configuration first.
    pub async fn spawn_with(db: Db, adjust: impl FnOnce(&mut Config)) -> Option<TestGateway> {
        Self::spawn_full(db, adjust, Arc::new(samgate::clock::SystemClock)).await
    }

    /// Like [`spawn`] with an injected clock (consent expiry without sleeping).
    pub async fn spawn_clocked(
        db: Db,
        clock: Arc<dyn samgate::clock::Clock>,
    ) -> Option<TestGateway> {
        Self::spawn_full(db, |_| {}, clock).await
    }

    /// An injected clock and an adjusted configuration.
    pub async fn spawn_clocked_with(
        db: Db,
        clock: Arc<dyn samgate::clock::Clock>,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<TestGateway> {
        Self::spawn_full(db, adjust, clock).await
    }

    async fn spawn_full(
        db: Db,
        adjust: impl FnOnce(&mut Config),
        clock: Arc<dyn samgate::clock::Clock>,
    ) -> Option<TestGateway> {
        let _ = captured_logs();
        let dir = tempfile::tempdir().unwrap();
        samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
        let mut config = Config::load(&dir.path().join("samgate.toml")).unwrap();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.url = fresh_db_url(db, dir.path()).await?;
        config.server.rate_limit_per_party = 0;
        // The witnesses init writes are not running here; tests that want them start
        // their own and configure them in `adjust` (tests/api/witness.rs).
        config.witnesses.clear();
        config.audit.witness_quorum = 0;
        let mut recipients = HashMap::new();
        for party in config.parties.iter_mut() {
            if party.endpoint.is_some() {
                let r = Recipient::start(
                    dir.path(),
                    party.id.as_str(),
                    "127.0.0.1:0".parse().unwrap(),
                )
                .await;
                party.endpoint = Some(format!("https://127.0.0.1:{}/inbox", r.addr.port()));
                recipients.insert(party.id.as_str().to_owned(), r);
            }
        }
        adjust(&mut config);
        let state = AppState::build_with_clock(config.clone(), clock)
            .await
            .unwrap();
        let gw = Gateway::start(state).await.unwrap();
        Some(TestGateway {
            dir,
            config,
            gw: Some(gw),
            recipients,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn addr(&self) -> SocketAddr {
        self.gw.as_ref().unwrap().addr
    }

    pub fn state(&self) -> &AppState {
        &self.gw.as_ref().unwrap().state
    }

    pub fn recipient(&self, party: &str) -> &Recipient {
        &self.recipients[party]
    }

    /// A client presenting `party`'s certificate.
    pub fn client(&self, party: &str) -> Client {
        Client::new(
            self.addr(),
            &self.path("pki/ca.pem"),
            Some((
                &self.path(&format!("pki/{party}.pem")),
                &self.path(&format!("pki/{party}.key")),
            )),
            None,
        )
    }

    /// The auditor party's client with a fresh user token.
    pub fn auditor(&self) -> Client {
        let token = samgate::consent::token::sign_user_token(
            &self.path("keys/users-sfk-kalmar-audit.pem"),
            "sfk-kalmar-audit-users",
            "revisor.anna",
            "samgate",
            10,
        )
        .unwrap();
        let mut c = self.client("sfk-kalmar-audit");
        c.bearer = Some(token);
        c
    }

    /// Graceful stop (final tree head).
    pub async fn stop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await;
        }
    }
}

/// An HTTPS client with an optional client certificate and bearer token.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub bearer: Option<String>,
}

/// A response with its parsed JSON (if any).
#[derive(Debug)]
pub struct Rsp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Rsp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    /// The problem code, from `type` = `urn:samgate:problem:<code>`.
    pub fn problem(&self) -> String {
        let j = self.json();
        let t = j["type"].as_str().unwrap_or("");
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "not a problem response: {} {}",
            self.status,
            self.text
        );
        t.strip_prefix("urn:samgate:problem:")
            .unwrap_or("")
            .to_owned()
    }
}

impl Client {
    pub fn new(
        addr: SocketAddr,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        bearer: Option<String>,
    ) -> Client {
        let tls = match identity {
            Some((cert, key)) => samgate::tls::client_config(ca, cert, key).unwrap(),
            None => {
                let mut roots = rustls::RootCertStore::empty();
                for c in samgate::tls::load_certs(ca).unwrap() {
                    roots.add(c).unwrap();
                }
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth()
            }
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Client {
            http,
            base: format!("https://127.0.0.1:{}", addr.port()),
            bearer,
        }
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn try_get(&self, path: &str) -> reqwest::Result<Rsp> {
        let r = self
            .auth(self.http.get(format!("{}{}", self.base, path)))
            .send()
            .await?;
        Ok(to_rsp(r).await)
    }

    pub async fn get(&self, path: &str) -> Rsp {
        self.try_get(path).await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Rsp {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Rsp {
        let mut rb = self
            .auth(self.http.post(format!("{}{}", self.base, path)))
            .json(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        to_rsp(rb.send().await.unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Rsp {
        let rb = self
            .auth(self.http.post(format!("{}{}", self.base, path)))
            .header("content-type", content_type)
            .body(body);
        to_rsp(rb.send().await.unwrap()).await
    }
}

async fn to_rsp(r: reqwest::Response) -> Rsp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Rsp {
        status,
        headers,
        text,
    }
}

/// Declares a test that runs on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::harness::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::harness::Db::Postgres).await
            }
        }
    };
}

/// A TCP proxy in front of PostgreSQL that a test can cut and restore, to
/// simulate the database becoming unreachable.
#[derive(Clone)]
pub struct ChaosProxy {
    pub addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl ChaosProxy {
    pub async fn start(target: SocketAddr) -> ChaosProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let my_gen = gen2.load(Ordering::SeqCst);
                let gen3 = gen2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while gen3.load(Ordering::SeqCst) == my_gen {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {},
                        _ = watch => {},
                    }
                });
            }
        });
        ChaosProxy {
            addr,
            up,
            generation,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The PostgreSQL URL of `fresh_db_url`, rewritten to go through `proxy`.
pub fn via_proxy(url: &str, proxy: &ChaosProxy) -> String {
    url.replace("127.0.0.1:5432", &proxy.addr.to_string())
}
