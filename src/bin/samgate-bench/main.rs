//! `samgate-bench`: samgate next to nginx on loopback, in one command
//! (issue 7). `cargo run --release --features bench --bin samgate-bench`.
//!
//! One run: `samgate init` into a temporary directory; an upstream HTTPS
//! recipient in this process; samgate on SQLite, samgate on PostgreSQL and
//! nginx, each as a child process, each driven with the same ~1 KB JSON
//! body over mTLS: a closed-loop keep-alive maximum, open-loop rates at
//! 25/50/75% of samgate's maximum, and a closed loop with a new TLS
//! connection per request. After every samgate measurement the audit log
//! must hold exactly one `exchange-delivered` record per 2xx answer.
//! Writes `results.md`, `results.csv`, `throughput.png` and `latency.png`.

mod load;
mod procs;

// The samgate binary's allocator (src/main.rs): samgate is measured as this
// executable re-run in `__serve` mode, so without this line the harness
// measured it on the system allocator, which the shipped binary does not use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod report;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hyper::body::Bytes;
use serde_json::{json, Value};

use load::{Driver, Stats};
use report::Row;

/// The participant every exchange is about (a valid test personnummer).
const SUBJECT: &str = "200203149828";
/// The sender and the route: kommun-kalmar → fk, rehabilitation-plan,
/// fields "*", subject revealed, consent required (route 4 of the demo
/// table). Its example payload makes a body of about 1 KB.
const SENDER: &str = "kommun-kalmar";
const RECIPIENT: &str = "fk";
const MSG_TYPE: &str = "rehabilitation-plan";
const PURPOSE: &str = "samordnad-rehabilitering";

/// Load harness: samgate (SQLite, PostgreSQL) next to nginx.
#[derive(Debug, Parser)]
#[command(name = "samgate-bench")]
struct Args {
    /// Where results.md, results.csv and the plots go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each contender's measurements.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Keep-alive connections (closed and open loop).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Concurrent workers in the new-connection-per-request run.
    #[arg(long, default_value_t = 16)]
    fresh_connections: usize,
    /// Open-loop rates as fractions of samgate's maximum.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    rates: Vec<f64>,
    /// PostgreSQL server (a fresh schema is created and dropped); default
    /// `$SAMGATE_TEST_POSTGRES`, else postgres://postgres@127.0.0.1:5432/test.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Leave out PostgreSQL.
    #[arg(long)]
    skip_postgres: bool,
    /// Leave out nginx.
    #[arg(long)]
    skip_nginx: bool,
    /// Smoke mode: 1 s measurements, results in a temporary directory
    /// unless --out is given.
    #[arg(long)]
    quick: bool,
    /// Record a `perf` profile of samgate (SQLite) during its keep-alive
    /// maximum into this file (needs `perf` from linux-perf).
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, databases).
    #[arg(long)]
    keep: bool,
}

impl Args {
    fn postgres_url(&self) -> String {
        self.postgres_url.clone().unwrap_or_else(|| {
            std::env::var("SAMGATE_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
        })
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // Child mode: this executable as `samgate serve` (same library code as
    // the samgate binary, so the measured gateway is the real one).
    if argv.get(1).map(String::as_str) == Some("__serve") {
        samgate::telemetry::init(false);
        let mut args = vec!["samgate".to_owned(), "serve".to_owned()];
        args.extend(argv.iter().skip(2).cloned());
        return samgate::cli::run(samgate::cli::Cli::parse_from(args));
    }
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("samgate-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("samgate-bench: FAILED (audit records do not match the 2xx answers)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("samgate-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Machine facts for the report.
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    date: String,
    load_before: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    #[expect(
        clippy::disallowed_methods,
        reason = "the report is dated with the real date"
    )]
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Machine {
        cpu,
        cores,
        kernel,
        date,
        load_before: loadavg(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Busy ticks of the whole machine (all CPUs) from /proc/stat.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    // cpu user nice system idle iowait irq softirq steal ...
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| v.get(*i))
        .sum()
}

/// The contender under measurement.
struct Target<'a> {
    name: String,
    pid: u32,
    driver: Driver,
    /// samgate: the database to count audit records in.
    audit: Option<&'a sqlx::AnyPool>,
    /// samgate: its plain-HTTP metrics listener.
    metrics: Option<SocketAddr>,
}

impl Target<'_> {
    /// samgate's (audit batches, audit records) counters so far.
    async fn metrics_audit(&self) -> Option<(f64, f64)> {
        let addr = self.metrics?;
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next())
                .filter_map(|v| v.parse::<f64>().ok())
                .sum()
        };
        Some((
            sum("samgate_audit_batches_total"),
            sum("samgate_audit_records_total"),
        ))
    }
}

/// Shared measurement state of one run.
struct Bench {
    args: Args,
    ticks_per_s: f64,
    rows: Vec<Row>,
    audit_ok: bool,
    /// Cumulative 2xx exchange answers of the current samgate instance.
    delivered_2xx: u64,
    notes: Vec<String>,
}

impl Bench {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(if self.args.quick {
            1.0
        } else {
            self.args.duration
        })
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(if self.args.quick {
            0.5
        } else {
            self.args.warmup
        })
    }

    /// Runs one measurement with CPU accounting and records its row.
    /// Long: one measurement bracketed by before/after readings (CPU, audit
    /// batches, machine ticks); splitting would part each reading from its
    /// pair.
    async fn measure(
        &mut self,
        t: &Target<'_>,
        mode: &str,
        target_rps: Option<f64>,
        fresh: bool,
        perf: Option<&Path>,
    ) -> anyhow::Result<Stats> {
        let dur = self.duration();
        let conns = if fresh {
            self.args.fresh_connections
        } else {
            self.args.connections
        };
        let perf_child = match perf {
            Some(file) => Some(
                std::process::Command::new("perf")
                    .args([
                        "record",
                        "-e",
                        "cpu-clock",
                        "-F",
                        "499",
                        "--call-graph",
                        "dwarf",
                        "-o",
                    ])
                    .arg(file)
                    .args(["-p", &t.pid.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .context("starting perf record")?,
            ),
            None => None,
        };
        let cpu0 = procs::cpu_ticks(t.pid);
        let self0 = procs::ticks_of(std::process::id()).unwrap_or(0);
        let batches0 = t.metrics_audit().await;
        let busy0 = machine_busy_ticks();
        let st = match target_rps {
            Some(rate) => t.driver.open(conns, dur, rate).await?,
            None => t.driver.closed(conns, dur, fresh).await?,
        };
        let cpu1 = procs::cpu_ticks(t.pid);
        let self1 = procs::ticks_of(std::process::id()).unwrap_or(0);
        let batches1 = t.metrics_audit().await;
        let busy1 = machine_busy_ticks();
        if let Some(mut p) = perf_child {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &p.id().to_string()])
                .status();
            let _ = p.wait();
        }
        let secs = st.elapsed.as_secs_f64().max(1e-9);
        let cpu_s = cpu1.saturating_sub(cpu0) as f64 / self.ticks_per_s;
        let self_s = self1.saturating_sub(self0) as f64 / self.ticks_per_s;
        let other_s =
            (busy1.saturating_sub(busy0) as f64 / self.ticks_per_s - cpu_s - self_s).max(0.0);
        let answered = st.ok + st.non2xx;
        let audit_batch = match (batches0, batches1) {
            (Some((b0, r0)), Some((b1, r1))) if b1 > b0 => Some((r1 - r0) / (b1 - b0)),
            _ => None,
        };
        self.delivered_2xx += st.ok;
        let audit = match t.audit {
            Some(pool) => self.check_audit(pool).await?,
            None => "-".into(),
        };
        let row = Row {
            contender: t.name.clone(),
            mode: mode.to_owned(),
            target_rps,
            conns,
            rps: st.rps(),
            ok: st.ok,
            errors: st.non2xx + st.failed + st.not_sent,
            p: [
                st.ms(0.5),
                st.ms(0.9),
                st.ms(0.99),
                st.ms(0.999),
                st.hist.max() as f64 / 1000.0,
            ],
            cpu_per_1k: if answered > 0 {
                cpu_s * 1000.0 / answered as f64
            } else {
                0.0
            },
            cores: cpu_s / secs,
            lag_p99: target_rps.map(|_| st.lag.value_at_quantile(0.99) as f64 / 1000.0),
            audit,
            audit_batch,
        };
        eprintln!(
            "  {:<16} {:<15} {:>8.0} req/s  p50 {:>7.2} p99 {:>7.2} p99.9 {:>7.2} ms  errors {}  CPU {:.3} s/1k ({:.2} cores; generator+upstream {:.2}, others {:.2} cores)  audit {} (records/batch {})",
            row.contender, row.mode, row.rps, row.p[0], row.p[2], row.p[3], row.errors, row.cpu_per_1k, row.cores,
            self_s / secs, other_s / secs, row.audit,
            row.audit_batch.map_or_else(|| "-".to_owned(), |b| format!("{b:.1}"))
        );
        if let Some(e) = &st.first_error {
            eprintln!("    first error: {e}");
        }
        self.notes.push(format!(
            "{} / {}: generator and upstream used {:.2} cores, other processes {:.2} cores",
            row.contender,
            row.mode,
            self_s / secs,
            other_s / secs
        ));
        self.rows.push(row);
        Ok(st)
    }

    /// Audit records of delivered exchanges against the 2xx answers so far.
    async fn check_audit(&mut self, pool: &sqlx::AnyPool) -> anyhow::Result<String> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_records WHERE action = 'exchange-delivered'",
        )
        .fetch_one(pool)
        .await
        .context("counting audit records")?;
        let n = u64::try_from(n).unwrap_or(0);
        if n == self.delivered_2xx {
            Ok(format!("ok ({n} = {n})"))
        } else {
            self.audit_ok = false;
            Ok(format!(
                "MISMATCH ({n} records, {} 2xx)",
                self.delivered_2xx
            ))
        }
    }

    /// Warm-up, keep-alive maximum, open-loop rates, new connections.
    async fn contender(
        &mut self,
        t: &Target<'_>,
        rates_from: Option<f64>,
        perf: Option<&Path>,
    ) -> anyhow::Result<f64> {
        eprintln!("== {}", t.name);
        let warm = t
            .driver
            .closed(self.args.connections, self.warmup(), false)
            .await?;
        self.delivered_2xx += warm.ok;
        if warm.ok == 0 {
            bail!(
                "{}: no request succeeded in the warm-up ({})",
                t.name,
                warm.first_error.unwrap_or_default()
            );
        }
        let max = self
            .measure(t, "keep-alive max", None, false, perf)
            .await?
            .rps();
        let base = rates_from.unwrap_or(max);
        let fractions = self.args.rates.clone();
        for f in fractions {
            let rate = (base * f).max(1.0).round();
            self.measure(
                t,
                &format!("rate {:.0}%", f * 100.0),
                Some(rate),
                false,
                None,
            )
            .await?;
        }
        self.measure(t, "new TLS conn", None, true, None).await?;
        Ok(max)
    }
}

/// The samgate configuration for one backend, next to samgate.toml (its
/// relative paths stay valid).
fn write_config(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    db_url: &str,
    upstream: SocketAddr,
    metrics: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(dir.join("samgate.toml"))?;
    let mut cfg: toml::Table = toml::from_str(&text).context("parsing samgate.toml")?;
    let section = |cfg: &mut toml::Table, k: &str| -> anyhow::Result<toml::Table> {
        cfg.get(k)
            .and_then(|v| v.as_table())
            .cloned()
            .with_context(|| format!("samgate.toml has no [{k}]"))
    };
    let mut server = section(&mut cfg, "server")?;
    server.insert("listen".into(), listen.to_string().into());
    server.insert("rate_limit_per_party".into(), 0.into());
    server.insert("metrics_listen".into(), metrics.to_string().into());
    cfg.insert("server".into(), server.into());
    let mut storage = section(&mut cfg, "storage")?;
    storage.insert("url".into(), db_url.into());
    cfg.insert("storage".into(), storage.into());
    if let Some(parties) = cfg.get_mut("party").and_then(|p| p.as_array_mut()) {
        for p in parties.iter_mut().filter_map(|p| p.as_table_mut()) {
            if p.get("id").and_then(|v| v.as_str()) == Some(RECIPIENT) {
                p.insert(
                    "endpoint".into(),
                    format!("https://127.0.0.1:{}/inbox", upstream.port()).into(),
                );
            }
        }
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    Ok(path)
}

/// An HTTPS client (reqwest) with a party's certificate, for set-up calls.
fn setup_client(dir: &Path, party: &str) -> anyhow::Result<reqwest::Client> {
    let tls = samgate::tls::client_config(
        &dir.join("pki/ca.pem"),
        &dir.join(format!("pki/{party}.pem")),
        &dir.join(format!("pki/{party}.key")),
    )?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(20))
        .build()?)
}

/// Waits until `addr` accepts TCP connections.
async fn wait_listening(addr: SocketAddr, proc_: &mut procs::Proc) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        proc_.check_alive()?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} did not start listening on {addr}", proc_.name)
}

/// The request body: the same bytes for every contender.
fn body() -> anyhow::Result<Bytes> {
    let example: Value = serde_json::from_str(
        samgate::schema::builtin_example(MSG_TYPE).context("no built-in example")?,
    )?;
    let env = json!({
        "to": RECIPIENT,
        "type": MSG_TYPE,
        "purpose": PURPOSE,
        "subject": SUBJECT,
        "delivery": "sync",
        "payload": example,
    });
    Ok(Bytes::from(serde_json::to_vec(&env)?))
}

fn driver(dir: &Path, addr: SocketAddr, body: &Bytes) -> anyhow::Result<Driver> {
    let tls = samgate::tls::client_config(
        &dir.join("pki/ca.pem"),
        &dir.join(format!("pki/{SENDER}.pem")),
        &dir.join(format!("pki/{SENDER}.key")),
    )?;
    let mut fresh = tls.clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    Ok(Driver {
        addr,
        server_name: rustls::pki_types::ServerName::try_from("localhost")?.to_owned(),
        tls: Arc::new(tls),
        tls_fresh: Arc::new(fresh),
        path: "/v1/exchanges".into(),
        body: body.clone(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Creates a fresh PostgreSQL schema; returns (url for samgate, schema).
async fn pg_schema(base: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = tokio::time::timeout(Duration::from_secs(5), sqlx::AnyConnection::connect(base))
        .await
        .context("PostgreSQL: connect timed out")??;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok((
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    ))
}

async fn pg_drop(base: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::AnyConnection::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

/// One samgate instance: start, consent, measure, check, stop.
/// Long: one contender's start, consent, measure, check and stop in one async
/// block, so the child is stopped on every path.
async fn run_samgate(
    b: &mut Bench,
    dir: &Path,
    backend: Backend,
    upstream: SocketAddr,
    body: &Bytes,
    rates_from: Option<f64>,
) -> anyhow::Result<f64> {
    let (name, db_url, schema) = match backend {
        Backend::Sqlite => (
            "samgate-sqlite",
            format!("sqlite://{}", dir.join("data/bench.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, schema) = pg_schema(&b.args.postgres_url()).await?;
            ("samgate-postgres", url, Some(schema))
        }
    };
    let listen = procs::free_port()?;
    let metrics = procs::free_port()?;
    let config = write_config(dir, name, listen, &db_url, upstream, metrics)?;
    let mut child = procs::spawn_samgate(name, &config, &dir.join(format!("{name}.log")))?;
    let result = async {
        wait_listening(listen, &mut child).await?;
        // The consent: signed by the intake system, recorded by sfk-kalmar.
        #[expect(
            clippy::disallowed_methods,
            reason = "the benchmark signs tokens valid from the real time"
        )]
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token = samgate::consent::cli::sign_consent(
            &samgate::cli::ConsentSignArgs {
                key: dir.join("keys/issuer-sfk-kalmar-intake.pem"),
                issuer: "sfk-kalmar-intake".into(),
                key_id: "2026-1".into(),
                subject: SUBJECT.into(),
                parties: ["fk", "af", "kommun-kalmar", "region-kalmar", "sfk-kalmar"]
                    .map(str::to_owned)
                    .to_vec(),
                purposes: vec![PURPOSE.into()],
                categories: samgate::schema::Category::ALL
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect(),
                days: 365,
                method: "written".into(),
                recorded_by: "handlaggare.eva".into(),
                given_by: None,
                protected_identity: false,
            },
            now,
        )
        .map_err(|e| anyhow::anyhow!("signing the consent: {e}"))?;
        let base = format!("https://localhost:{}", listen.port());
        let rsp = setup_client(dir, "sfk-kalmar")?
            .post(format!("{base}/v1/consents"))
            .json(&json!({"token": token}))
            .send()
            .await?;
        if rsp.status().as_u16() != 201 {
            bail!(
                "recording the consent: HTTP {} {}",
                rsp.status(),
                rsp.text().await?
            );
        }
        // One exchange by hand, to show the shape and fail early.
        let rsp = setup_client(dir, SENDER)?
            .post(format!("{base}/v1/exchanges"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let status = rsp.status().as_u16();
        let text = rsp.text().await?;
        if status != 200 {
            bail!("the first exchange failed: HTTP {status} {text}");
        }
        eprintln!("  first exchange: {text}");
        b.delivered_2xx = 1;
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&db_url)
            .await
            .context("opening the audit database for the check")?;
        let target = Target {
            name: name.to_owned(),
            pid: child.pid(),
            driver: driver(dir, listen, body)?,
            audit: Some(&pool),
            metrics: Some(metrics),
        };
        let perf = if backend == Backend::Sqlite {
            b.args.perf.clone()
        } else {
            None
        };
        let max = b.contender(&target, rates_from, perf.as_deref()).await?;
        pool.close().await;
        anyhow::Ok(max)
    }
    .await;
    child.stop(Duration::from_secs(15));
    if let Some(schema) = schema {
        pg_drop(&b.args.postgres_url(), &schema).await;
    }
    result
}

async fn run_nginx(
    b: &mut Bench,
    dir: &Path,
    upstream: SocketAddr,
    body: &Bytes,
    rates_from: Option<f64>,
) -> anyhow::Result<String> {
    let bin = procs::nginx_binary()?;
    let version = procs::nginx_version(&bin);
    let listen = procs::free_port()?;
    let run = dir.join("nginx");
    let mut child = procs::spawn_nginx(&bin, &dir.join("pki"), &run, listen, upstream)?;
    let result = async {
        wait_listening(listen, &mut child).await?;
        let target = Target {
            name: "nginx".into(),
            pid: child.pid(),
            driver: driver(dir, listen, body)?,
            audit: None,
            metrics: None,
        };
        b.contender(&target, rates_from, None).await?;
        anyhow::Ok(())
    }
    .await;
    child.stop(Duration::from_secs(10));
    result.map(|()| version)
}

/// Long: the benchmark's top-level sequence (contenders, then outputs), read
/// top to bottom.
async fn run(args: Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let m = machine();
    let tmp = tempfile::Builder::new()
        .prefix("samgate-bench-")
        .tempdir()?;
    let out = match (&args.out, args.quick) {
        (Some(o), _) => o.clone(),
        (None, true) => tmp.path().join("results"),
        (None, false) => PathBuf::from("docs/performance"),
    };
    std::fs::create_dir_all(&out)?;
    let dir = tmp.path().join("deployment");
    samgate::init::init(&dir, &samgate::init::InitOptions::default()).context("samgate init")?;
    eprintln!("samgate init wrote {}", dir.display());
    let upstream = upstream::start(&dir, RECIPIENT, "127.0.0.1:0".parse()?).await?;
    let body = body()?;
    eprintln!(
        "upstream recipient on {upstream}; request body {} bytes",
        body.len()
    );

    let mut b = Bench {
        ticks_per_s: procs::clock_ticks(),
        rows: Vec::new(),
        audit_ok: true,
        delivered_2xx: 0,
        notes: Vec::new(),
        args,
    };
    let mut contenders = Vec::new();
    let mut skipped = Vec::new();
    let sqlite_max = run_samgate(&mut b, &dir, Backend::Sqlite, upstream, &body, None).await?;
    contenders.push("samgate-sqlite".to_owned());
    if b.args.skip_postgres {
        skipped.push("samgate-postgres (--skip-postgres)".to_owned());
    } else {
        match run_samgate(&mut b, &dir, Backend::Postgres, upstream, &body, None).await {
            Ok(_) => contenders.push("samgate-postgres".to_owned()),
            Err(e) => {
                eprintln!("samgate-postgres: {e:#}");
                skipped.push(format!("samgate-postgres ({e:#})"));
            }
        }
    }
    let mut nginx_version = String::new();
    if b.args.skip_nginx {
        skipped.push("nginx (--skip-nginx)".to_owned());
    } else {
        nginx_version = run_nginx(&mut b, &dir, upstream, &body, Some(sqlite_max)).await?;
        contenders.push("nginx".to_owned());
    }

    let rate_modes: Vec<String> = b
        .args
        .rates
        .iter()
        .map(|f| format!("rate {:.0}%", f * 100.0))
        .collect();
    report::write_csv(&out.join("results.csv"), &b.rows)?;
    report::register_font()?;
    report::plot_throughput(&out.join("throughput.png"), &b.rows, &contenders)?;
    report::plot_latency(&out.join("latency.png"), &b.rows, &contenders, &rate_modes)?;
    let md = results_md(
        &b,
        &m,
        &contenders,
        &skipped,
        &nginx_version,
        body.len(),
        started.elapsed(),
    );
    std::fs::write(out.join("results.md"), md)?;
    eprintln!(
        "wrote {}/results.md, results.csv, throughput.png, latency.png",
        out.display()
    );
    if b.args.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(b.audit_ok)
}

/// Long: the results page written top to bottom in the order it reads.
fn results_md(
    b: &Bench,
    m: &Machine,
    contenders: &[String],
    skipped: &[String],
    nginx_version: &str,
    body_len: usize,
    took: Duration,
) -> String {
    use std::fmt::Write as _;
    let a = &b.args;
    let dur = b.duration().as_secs_f64();
    let mut s = String::new();
    let _ = writeln!(s, "# samgate-bench results\n");
    let _ = writeln!(
        s,
        "Written by `cargo run --release --features bench --bin samgate-bench` on {} in {:.0} s.\n",
        m.date,
        took.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "- Machine: {} × {} (Linux {}), load average before the run: {}, after: {}",
        m.cores,
        m.cpu,
        m.kernel,
        m.load_before,
        loadavg()
    );
    let _ = writeln!(s, "- Contenders: {}", contenders.join(", "));
    if !skipped.is_empty() {
        let _ = writeln!(s, "- Left out: {}", skipped.join("; "));
    }
    if !nginx_version.is_empty() {
        let _ = writeln!(
            s,
            "- nginx: {nginx_version}, `worker_processes auto`, access log on"
        );
    }
    let _ = writeln!(
        s,
        "- Request: `POST /v1/exchanges`, {body_len} bytes of JSON ({MSG_TYPE}, {SENDER} → {RECIPIENT}, subject revealed, consent required), the same bytes for every contender; mTLS with the {SENDER} certificate; upstream answers 200 with an empty body"
    );
    let _ = writeln!(
        s,
        "- Each measurement {dur:.0} s; keep-alive runs over {} connections, the new-connection run with {} workers (full TLS handshake each, no resumption); open-loop rates are fractions ({}) of samgate-sqlite's keep-alive maximum for samgate-sqlite and nginx, and of its own maximum for samgate-postgres",
        a.connections,
        a.fresh_connections,
        a.rates.iter().map(|f| format!("{:.0}%", f * 100.0)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        s,
        "- Load generator and upstream run in the bench process on the same cores as the proxy (loopback).\n"
    );
    s.push_str(&report::markdown_table(&b.rows));
    let _ = writeln!(
        s,
        "\nLatencies of the `rate` rows are open loop, measured from each request's intended send time (coordinated-omission free); those of `keep-alive max` and `new TLS conn` are closed loop. `CPU s / 1k req` is utime+stime of the proxy process (nginx: master and workers) per 1,000 answered requests; `proxy cores` the average number of cores it used. The audit check compares `exchange-delivered` records with the 2xx answers received so far from that samgate instance.\n"
    );
    let get = |c: &str, mode: &str| b.rows.iter().find(|r| r.contender == c && r.mode == mode);
    let _ = writeln!(s, "## Targets (issue 7)\n");
    let _ = writeln!(s, "| target | reached | met |\n|---|---|---|");
    if let (Some(sg), Some(ng)) = (
        get("samgate-sqlite", "keep-alive max"),
        get("nginx", "keep-alive max"),
    ) {
        let ratio = sg.rps / ng.rps.max(1e-9);
        let _ = writeln!(
            s,
            "| samgate ≥ 0.5 × nginx throughput | {ratio:.2} × ({:.0} / {:.0} req/s) | {} |",
            sg.rps,
            ng.rps,
            yes(ratio >= 0.5)
        );
    }
    if let Some(sg) = get("samgate-sqlite", "keep-alive max") {
        let _ = writeln!(
            s,
            "| ≥ 10,000 exchanges/s on SQLite | {:.0} /s | {} |",
            sg.rps,
            yes(sg.rps >= 10_000.0)
        );
    }
    if let Some(sg) = get("samgate-sqlite", "rate 50%") {
        let _ = writeln!(
            s,
            "| p99 ≤ 5 ms at 50% of max | {:.2} ms at {:.0} req/s | {} |",
            sg.p[2],
            sg.target_rps.unwrap_or(0.0),
            yes(sg.p[2] <= 5.0)
        );
    }
    let _ = writeln!(
        s,
        "| 0 audit mismatches | {} | {} |",
        if b.audit_ok {
            "0"
        } else {
            "mismatch (see table)"
        },
        yes(b.audit_ok)
    );
    let _ = writeln!(s, "\n## Machine load during the run\n");
    for n in &b.notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(
        s,
        "\n![throughput](throughput.png)\n\n![latency](latency.png)"
    );
    s
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
