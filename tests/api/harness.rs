//! The test harness: a real gateway over mTLS on an ephemeral port, with the
//! working set written by `samgate init` (the same library code), its own
//! database (a temp SQLite file or a fresh PostgreSQL schema), and real HTTPS
//! recipient servers on loopback that record what they receive.
//!
//! Also the shared fixtures (the test participants, consent arguments and
//! recording, example messages, hand-signed JWS), a typed client
//! (`post_exchange`, `exchange_status`, `wait_for_exchange`,
//! `Rsp::problem_code`) and the one place that decides whether PostgreSQL
//! runs: [`postgres_url`], asked by `both_backends!` (and by the few
//! PostgreSQL-only tests through [`backend_available`]); absent locally it
//! is skipped, absent under `SAMGATE_REQUIRE_POSTGRES` the run fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use samgate::audit::record::AuditRecord;
use samgate::config::Config;
use samgate::http::server::Gateway;
use samgate::state::AppState;
use samgate::subject::personnummer::Personnummer;
use serde_json::{json, Value};
use tempfile::TempDir;

// ---- Fixtures: the people, the consent, the messages ----

/// The test participants (valid numbers, DESIGN §3).
pub const ALVA: &str = "200203149828";
pub const NILS: &str = "200011029915";
pub const BERIT: &str = "198209239865";

/// Every party and every category of the `samgate init` configuration.
pub const ALL_PARTIES: &[&str] = &["fk", "af", "kommun-kalmar", "region-kalmar", "sfk-kalmar"];
pub const ALL_CATEGORIES: &[&str] = &[
    "case",
    "identity",
    "contact",
    "benefit",
    "employment",
    "education",
    "attendance",
    "health",
    "social-services",
    "outcome",
    "free-text",
];

/// The wall clock's Unix time (what a consent is signed at).
pub fn now() -> i64 {
    #[expect(
        clippy::disallowed_methods,
        reason = "test tokens are valid from the real time the gateway clock starts at"
    )]
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A valid personnummer (12 digits) from a date and a serial.
pub fn valid_number(year: i32, month: u32, day: u32, serial: u32, samordning: bool) -> String {
    let day = if samordning { day + 60 } else { day };
    let nine = format!("{:02}{month:02}{day:02}{serial:03}", year % 100);
    let sum: u32 = nine
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            d / 10 + d % 10
        })
        .sum();
    format!("{}{nine}{}", year / 100, (10 - sum % 10) % 10)
}

/// The built-in example payload of a message type.
pub fn example(t: &str) -> Value {
    serde_json::from_str(samgate::schema::builtin_example(t).unwrap()).unwrap()
}

/// An exchange envelope for samordnad-rehabilitering.
pub fn envelope(to: &str, msg_type: &str, subject: &str, payload: Value) -> Value {
    json!({"to": to, "type": msg_type, "purpose": "samordnad-rehabilitering",
           "subject": subject, "payload": payload})
}

/// The example attendance report about `subject` to fk, sync.
pub fn attendance(subject: &str) -> Value {
    let mut m = envelope(
        "fk",
        "attendance-report",
        subject,
        example("attendance-report"),
    );
    m["delivery"] = json!("sync");
    m
}

/// The consent the intake party (sfk-kalmar-intake) signs for these
/// parties and categories: both purposes, a year, written.
/// `working_set` is a `TestGateway` or the directory of a `samgate init`.
pub fn consent_args(
    working_set: impl AsRef<Path>,
    subject: &str,
    parties: &[&str],
    categories: &[&str],
) -> samgate::cli::ConsentSignArgs {
    samgate::cli::ConsentSignArgs {
        key: working_set
            .as_ref()
            .join("keys/issuer-sfk-kalmar-intake.pem"),
        issuer: "sfk-kalmar-intake".into(),
        key_id: "2026-1".into(),
        subject: subject.into(),
        parties: parties.iter().map(|s| s.to_string()).collect(),
        purposes: vec!["samordnad-rehabilitering".into(), "uppfoljning".into()],
        categories: categories.iter().map(|s| s.to_string()).collect(),
        days: 365,
        method: "written".into(),
        recorded_by: "handlaggare.eva".into(),
        given_by: None,
        protected_identity: false,
    }
}

/// Signs `args` at `at` and records it through the API; its summary.
pub async fn record_signed(
    gw: &TestGateway,
    args: &samgate::cli::ConsentSignArgs,
    at: i64,
) -> Value {
    let token = samgate::consent::cli::sign_consent(args, at).unwrap();
    let rsp = gw.submit_consent(&token).await;
    assert_eq!(rsp.status, 201, "{}", rsp.text);
    rsp.json()
}

/// Records a consent of `subject` for every party and category; its id.
pub async fn consent_to_all(gw: &TestGateway, subject: &str) -> String {
    record_consent(gw, subject, ALL_PARTIES, ALL_CATEGORIES).await
}

/// Records a consent through the API and returns its id.
pub async fn record_consent(
    gw: &TestGateway,
    subject: &str,
    parties: &[&str],
    categories: &[&str],
) -> String {
    let args = consent_args(gw, subject, parties, categories);
    record_signed(gw, &args, now()).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A consent-required route for samordnad-rehabilitering, to push into
/// `Config::routes` in a `spawn_with` adjustment.
pub fn route(
    from: &str,
    to: &[&str],
    msg_type: &str,
    fields: &[&str],
    subject: samgate::policy::SubjectMode,
) -> samgate::policy::route::RouteConfig {
    samgate::policy::route::RouteConfig {
        from: vec![samgate::party::PartyId::new(from)],
        to: to
            .iter()
            .map(|p| samgate::party::PartyId::new(*p))
            .collect(),
        msg_type: msg_type.into(),
        purposes: vec!["samordnad-rehabilitering".into()],
        fields: fields.iter().map(|s| s.to_string()).collect(),
        subject,
        consent: samgate::policy::route::ConsentRequirement::Required,
    }
}

/// base64url (no padding) of a JSON value: a JWS header or claims part.
pub fn b64_json(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A compact JWS over `header` and `claims` by an Ed25519 PKCS#8 key, signed
/// by hand (so that tests can sign what samgate's own signers refuse to).
pub fn sign_jws_der(pkcs8: &[u8], header: &Value, claims: &Value) -> String {
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).unwrap();
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let sig = kp.sign(input.as_bytes());
    format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref())
    )
}

/// [`sign_jws_der`] with the key of a PEM file.
pub fn sign_jws(pem_path: &Path, header: &Value, claims: &Value) -> String {
    let pem = std::fs::read(pem_path).unwrap();
    sign_jws_der(pem::parse(pem).unwrap().contents(), header, claims)
}

/// Retries within milliseconds (20 ms backoff, at most 100 ms), for
/// `TestGateway::spawn_with`.
pub fn fast_retries(c: &mut Config) {
    c.delivery.backoff_initial = Duration::from_millis(20);
    c.delivery.backoff_max = Duration::from_millis(100);
}

/// The one number a `SELECT COUNT(*) …` answers.
pub async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A free loopback port (bound, then released for a child to take).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server URL for tests, or None when it is absent and not
/// required (a developer machine without PostgreSQL). CI sets
/// `SAMGATE_REQUIRE_POSTGRES=1`, so there a missing server fails the run.
/// The one place that decides: asked once per test process.
pub async fn postgres_url() -> Option<String> {
    static URL: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
    URL.get_or_init(|| async {
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
                eprintln!(
                    "PostgreSQL unreachable at {url}: skipping the postgres variants locally"
                );
                None
            }
        }
    })
    .await
    .clone()
}

/// Whether a test on `db` runs here: SQLite always; PostgreSQL when it is
/// reachable (and required in CI, see [`postgres_url`]). `both_backends!`
/// asks this before a test's body; a PostgreSQL-only test asks it first.
pub async fn backend_available(db: Db) -> bool {
    db == Db::Sqlite || postgres_url().await.is_some()
}

/// A storage URL for a fresh, empty database of the given kind. For
/// PostgreSQL call it only where [`backend_available`] said yes.
pub async fn fresh_db_url(db: Db, dir: &Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("data/samgate.db").display()),
        Db::Postgres => {
            let base = postgres_url().await.expect("PostgreSQL is available");
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            use sqlx::Connection;
            let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{schema}")
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

#[path = "../support/pnr.rs"]
mod pnr;
pub use pnr::pnr_forms;

/// Asserts that `text` holds no form of these numbers; `what` names where.
pub fn assert_free_of(text: &str, numbers: &[&str], what: &str) {
    for n in numbers {
        for form in pnr_forms(n) {
            assert!(!text.contains(&form), "{what} contains a personnummer form");
        }
    }
}

/// Asserts that no captured log line contains any form of these numbers.
pub fn assert_logs_clean(numbers: &[&str]) {
    let logs = captured_logs();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert_free_of(&text, numbers, "a log line");
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

    /// The `exchange_id` of the delivered message.
    pub fn exchange_id(&self) -> String {
        self.json()["exchange_id"].as_str().unwrap().to_owned()
    }
}

/// How a recipient answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub delay: Duration,
}

impl Reply {
    /// This status, no body, at once.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            ..Reply::default()
        }
    }

    /// 200 with this JSON body (a reply message), at once.
    pub fn json(body: Value) -> Reply {
        Reply {
            body: Some(body),
            ..Reply::default()
        }
    }

    /// 200, no body, after `delay`.
    pub fn delayed(delay: Duration) -> Reply {
        Reply {
            delay,
            ..Reply::default()
        }
    }
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
    /// On PostgreSQL only where [`backend_available`] (`both_backends!` asks).
    pub async fn spawn(db: Db) -> TestGateway {
        Self::spawn_with(db, |_| {}).await
    }

    /// Like [`spawn`], with `subject`'s consent to every party and category
    /// recorded (the usual start of an exchange test).
    pub async fn spawn_with_consent(db: Db, subject: &str) -> TestGateway {
        let gw = Self::spawn(db).await;
        consent_to_all(&gw, subject).await;
        gw
    }

    /// Like [`spawn`], letting the test adjust the configuration first.
    pub async fn spawn_with(db: Db, adjust: impl FnOnce(&mut Config)) -> TestGateway {
        Self::spawn_full(db, adjust, Arc::new(samgate::clock::SystemClock)).await
    }

    /// Like [`spawn`] with an injected clock (consent expiry without sleeping).
    pub async fn spawn_clocked(db: Db, clock: Arc<dyn samgate::clock::Clock>) -> TestGateway {
        Self::spawn_full(db, |_| {}, clock).await
    }

    /// An injected clock and an adjusted configuration.
    pub async fn spawn_clocked_with(
        db: Db,
        clock: Arc<dyn samgate::clock::Clock>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestGateway {
        Self::spawn_full(db, adjust, clock).await
    }

    async fn spawn_full(
        db: Db,
        adjust: impl FnOnce(&mut Config),
        clock: Arc<dyn samgate::clock::Clock>,
    ) -> TestGateway {
        let _ = captured_logs();
        let dir = tempfile::tempdir().unwrap();
        samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
        let mut config = Config::load(&dir.path().join("samgate.toml")).unwrap();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.url = fresh_db_url(db, dir.path()).await;
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
        TestGateway {
            dir,
            config,
            gw: Some(gw),
            recipients,
        }
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

    pub fn pool(&self) -> &sqlx::AnyPool {
        self.state().store.pool()
    }

    /// The date the gateway judges numbers on: its clock's.
    pub fn today(&self) -> time::Date {
        self.state().clock.now().date()
    }

    /// A test number parsed as the gateway parses it, on [`Self::today`].
    pub fn personnummer(&self, number: &str) -> Personnummer {
        Personnummer::parse_at(number, self.today()).unwrap()
    }

    /// A second instance on this gateway's configuration: its own pool,
    /// audit writer and outbox worker, the same database.
    pub async fn second_instance(&self) -> Gateway {
        let state = AppState::build(self.config.clone()).await.unwrap();
        Gateway::start(state).await.unwrap()
    }

    /// A client of `party` (with this working set's certificates) to another
    /// instance, e.g. [`Self::second_instance`].
    pub fn client_of(&self, instance: &Gateway, party: &str) -> Client {
        Client::of(instance.addr, self.dir.path(), party)
    }

    /// The audit pseudonym of a test number, as it is stored.
    pub fn audit_pseudonym(&self, number: &str) -> String {
        let crypto = &self.state().crypto;
        let ps = crypto.audit_pseudonym(&self.personnummer(number)).unwrap();
        ps.as_str().to_owned()
    }

    pub fn recipient(&self, party: &str) -> &Recipient {
        &self.recipients[party]
    }

    /// A client presenting `party`'s certificate.
    pub fn client(&self, party: &str) -> Client {
        Client::of(self.addr(), self.dir.path(), party)
    }

    /// The auditor party's client with a fresh user token.
    pub fn auditor(&self) -> Client {
        self.client_as_user("sfk-kalmar-audit", "revisor.anna")
    }

    /// `party`'s client with a fresh user token naming `user`, signed by
    /// the party's own `[[jwt_issuer]]` key (`keys/users-<party>.pem`).
    pub fn client_as_user(&self, party: &str, user: &str) -> Client {
        let token = samgate::consent::token::sign_user_token(
            &self.path(&format!("keys/users-{party}.pem")),
            &format!("{party}-users"),
            user,
            "samgate",
            10,
        )
        .unwrap();
        let mut c = self.client(party);
        c.bearer = Some(token);
        c
    }

    /// The gateway's own CA (`pki/ca.pem`), to issue what nobody pinned.
    pub fn ca(&self) -> samgate::pki::Ca {
        samgate::pki::Ca::from_pem(
            &std::fs::read_to_string(self.path("pki/ca.pem")).unwrap(),
            &std::fs::read_to_string(self.path("pki/ca.key")).unwrap(),
        )
        .unwrap()
    }

    /// A client presenting `id` (and trusting the gateway's CA).
    pub fn client_with(&self, id: &Identity) -> Client {
        Client::new(
            self.addr(),
            &self.path("pki/ca.pem"),
            Some((&id.cert, &id.key)),
            None,
        )
    }

    /// Sends a consent token as the intake party (sfk-kalmar), as it is.
    pub async fn submit_consent(&self, token: &str) -> Rsp {
        self.client("sfk-kalmar")
            .post("/v1/consents", &json!({"token": token}))
            .await
    }

    /// `GET /v1/consents/{id}` as the intake party, its JSON.
    pub async fn consent(&self, consent_id: &str) -> Value {
        self.client("sfk-kalmar")
            .get(&format!("/v1/consents/{consent_id}"))
            .await
            .json()
    }

    /// Revokes a consent as the intake party, with this body.
    pub async fn revoke(&self, consent_id: &str, body: &Value) -> Rsp {
        self.client("sfk-kalmar")
            .post(&format!("/v1/consents/{consent_id}/revocation"), body)
            .await
    }

    /// The audit records of one exchange, in seq order.
    pub async fn records_of(&self, exchange_id: &str) -> Vec<AuditRecord> {
        let leaves: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT leaf FROM audit_records WHERE exchange_id = $1 ORDER BY seq",
        )
        .bind(exchange_id.to_owned())
        .fetch_all(self.pool())
        .await
        .unwrap();
        leaves
            .iter()
            .map(|l| AuditRecord::from_leaf(l).unwrap())
            .collect()
    }

    /// How many audit records have this action.
    pub async fn count_records(&self, action: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_records WHERE action = $1")
            .bind(action.to_owned())
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// The bytes of the SQLite file and its WAL, after a graceful stop.
    pub async fn sqlite_bytes(&mut self) -> Vec<u8> {
        self.stop().await;
        let mut bytes = Vec::new();
        for f in ["data/samgate.db", "data/samgate.db-wal"] {
            if let Ok(b) = std::fs::read(self.path(f)) {
                bytes.extend(b);
            }
        }
        bytes
    }

    /// Writes the gateway's running configuration as a file (with the
    /// harness's adjustments: database, recipient ports), after `adjust`,
    /// mode 0600; its path. For `samgate check`, reloads and child serves.
    pub fn write_config(&self, name: &str, adjust: impl FnOnce(&mut toml::Table)) -> PathBuf {
        let text = std::fs::read_to_string(self.path("samgate.toml")).unwrap();
        let mut t: toml::Table = toml::from_str(&text).unwrap();
        t["server"]["listen"] = toml::Value::String("127.0.0.1:0".into());
        t["storage"]["url"] = toml::Value::String(self.config.storage.url.clone());
        for p in t["party"].as_array_mut().unwrap() {
            let id = p["id"].as_str().unwrap().to_owned();
            if let Some(ep) = self.config.party(&id).and_then(|c| c.endpoint.clone()) {
                p["endpoint"] = toml::Value::String(ep);
            }
        }
        adjust(&mut t);
        let path = self.path(name);
        std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Graceful stop (final tree head).
    pub async fn stop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await;
        }
    }
}

/// A client certificate and key in files of their own.
pub struct Identity {
    _dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    /// A client certificate for `name` issued by `ca`, written out.
    pub fn issue(ca: &samgate::pki::Ca, name: &str) -> Identity {
        let issued = ca.issue_client(name).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(&cert, issued.cert_pem()).unwrap();
        std::fs::write(&key, issued.key_pem()).unwrap();
        Identity {
            _dir: dir,
            cert,
            key,
        }
    }
}

/// The gateway's working set (what `samgate init` wrote).
impl AsRef<Path> for TestGateway {
    fn as_ref(&self) -> &Path {
        self.dir.path()
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
    /// The problem code of `type` (empty when there is none).
    code: String,
}

impl Rsp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    /// The problem code, from `type` = `urn:samgate:problem:<code>`.
    pub fn problem(&self) -> String {
        self.problem_code().1.to_owned()
    }

    /// The status and problem code, to compare with `(403, "consent_missing")`.
    /// Asserts that this is a problem+json response.
    pub fn problem_code(&self) -> (u16, &str) {
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "not a problem response: {} {}",
            self.status,
            self.text
        );
        (self.status, &self.code)
    }

    /// The `exchange_id` of an exchange answer (or problem).
    pub fn exchange_id(&self) -> String {
        self.json()["exchange_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no exchange_id: {} {}", self.status, self.text))
            .to_owned()
    }
}

impl Client {
    /// A client of the gateway at `addr` presenting `pki/<name>.pem` of the
    /// working set in `dir` (a party, `gateway-client`, `users/<id>`).
    pub fn of(addr: SocketAddr, dir: &Path, name: &str) -> Client {
        Client::new(
            addr,
            &dir.join("pki/ca.pem"),
            Some((
                &dir.join(format!("pki/{name}.pem")),
                &dir.join(format!("pki/{name}.key")),
            )),
            None,
        )
    }

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
        Ok(Rsp::read(r).await)
    }

    pub async fn get(&self, path: &str) -> Rsp {
        self.try_get(path).await.unwrap()
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Rsp {
        let mut rb = self.auth(self.http.get(format!("{}{}", self.base, path)));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Rsp::read(rb.send().await.unwrap()).await
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
        Rsp::read(rb.send().await.unwrap()).await
    }

    /// `POST /v1/exchanges`.
    pub async fn post_exchange(&self, msg: &Value) -> Rsp {
        self.post("/v1/exchanges", msg).await
    }

    /// `POST /v1/exchanges` with extra headers (`Idempotency-Key`, …).
    pub async fn post_exchange_with(&self, msg: &Value, headers: &[(&str, &str)]) -> Rsp {
        self.post_with("/v1/exchanges", msg, headers).await
    }

    /// `POST /v1/disclosures` for this personnummer (any spelling).
    pub async fn disclosures(&self, personnummer: &str) -> Rsp {
        self.post("/v1/disclosures", &json!({"personnummer": personnummer}))
            .await
    }

    /// `GET /v1/exchanges/{id}`, its JSON.
    pub async fn exchange_status(&self, id: &str) -> Value {
        self.get(&format!("/v1/exchanges/{id}")).await.json()
    }

    /// Polls the exchange's status until `done` holds; the last status
    /// (the caller asserts on it). Bounded, asserting no duration.
    pub async fn wait_for_exchange(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut st = Value::Null;
        for _ in 0..800 {
            st = self.exchange_status(id).await;
            if done(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        st
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Rsp {
        let rb = self
            .auth(self.http.post(format!("{}{}", self.base, path)))
            .header("content-type", content_type)
            .body(body);
        Rsp::read(rb.send().await.unwrap()).await
    }
}

impl Rsp {
    /// Reads a reqwest response whole.
    pub async fn read(r: reqwest::Response) -> Rsp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = json["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:samgate:problem:"))
            .unwrap_or("")
            .to_owned();
        Rsp {
            status,
            headers,
            text,
            code,
        }
    }
}

/// Declares a test that runs on SQLite and on PostgreSQL. The PostgreSQL
/// variant is skipped where the server is absent and not required
/// ([`backend_available`]); the body never has to ask.
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
                if $crate::harness::backend_available($crate::harness::Db::Postgres).await {
                    ($body)($crate::harness::Db::Postgres).await
                }
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
