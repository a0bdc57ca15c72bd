//! Witnesses (DESIGN §12) with real parts: witness servers over mTLS on loopback with their
//! own SQLite stores, the gateway's submission tasks, the cosigned tree head, the offline
//! verifier with kept checkpoints, and register extracts with proofs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use samgate::audit::cosign::{self, WitnessKey};
use samgate::audit::verify::{Failure, KeptCheckpoint, VerifyError};
use samgate::config::Config;
use samgate::config::WitnessEntry;
use samgate::http::server::Gateway;
use samgate::state::AppState;
use samgate::witness::config::WitnessConfig;
use samgate::witness::server::WitnessServer;

use crate::audit::{seed, PNR_A};
use crate::both_backends;
use crate::harness::{fresh_db_url, Client, Db, TestGateway};

/// A witness started for a test gateway's working set.
struct TestWitness {
    name: String,
    key: WitnessKey,
    vkey: PathBuf,
    server: Option<WitnessServer>,
}

impl TestWitness {
    async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
    fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.server.as_ref().unwrap().addr.port()
        )
    }
}

fn origin(config: &Config) -> String {
    format!("samgate/{}", config.server.deployment_id)
}

/// `samgate witness init` into `<dir>/tw/<name>` for the log of `dir`, issued by its CA,
/// pinned to the gateway's client certificate; then started on an ephemeral port.
async fn start_witness(dir: &Path, name: &str, origin: &str) -> TestWitness {
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let ca = samgate::pki::Ca::from_pem(&read("pki/ca.pem"), &read("pki/ca.key")).unwrap();
    let der = samgate::pki::first_certificate_der(&read("pki/gateway-client.pem")).unwrap();
    let pin = samgate::pki::spki_sha256_hex(&der).unwrap();
    let wdir = dir.join("tw").join(name);
    let opts = samgate::witness::init::WitnessInit {
        name: name.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        logs: vec![(
            origin.to_owned(),
            dir.join("keys/audit.pub.pem").display().to_string(),
        )],
        client_ca: dir.join("pki/ca.pem").display().to_string(),
        client_pins: vec![pin],
    };
    let key = samgate::witness::init::init(&wdir, &opts, Some(&ca)).unwrap();
    let config = WitnessConfig::load(&wdir.join("witness.toml")).unwrap();
    let server = WitnessServer::start(&config).await.unwrap();
    TestWitness {
        name: name.to_owned(),
        key,
        vkey: wdir.join("witness.vkey"),
        server: Some(server),
    }
}

/// A unique witness name per test (the metrics are process-wide).
fn wname(test: &str, i: usize) -> String {
    format!(
        "{test}-w{i}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A gateway from a fresh `samgate init`, with `n` witnesses of its own and `quorum`.
async fn gateway_with_witnesses(
    db: Db,
    test: &str,
    n: usize,
    quorum: usize,
) -> (TestGateway, Vec<TestWitness>) {
    let _ = crate::harness::captured_logs();
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let mut config = Config::load(&dir.path().join("samgate.toml")).unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.rate_limit_per_party = 0;
    config.storage.url = fresh_db_url(db, dir.path()).await;
    let mut witnesses = Vec::new();
    for i in 0..n {
        witnesses.push(start_witness(dir.path(), &wname(test, i), &origin(&config)).await);
    }
    config.witnesses = witnesses
        .iter()
        .map(|w| WitnessEntry {
            name: w.name.clone(),
            url: w.url(),
            public_key: w.vkey.clone(),
            ca: None,
        })
        .collect();
    config.audit.witness_quorum = quorum;
    config.audit.witness_wait = Duration::from_secs(20);
    let gw = start_gateway(config.clone()).await;
    (
        TestGateway {
            dir,
            config,
            gw: Some(gw),
            recipients: HashMap::new(),
        },
        witnesses,
    )
}

async fn start_gateway(config: Config) -> Gateway {
    let state = AppState::build_with_clock(config, Arc::new(samgate::clock::SystemClock))
        .await
        .unwrap();
    Gateway::start(state).await.unwrap()
}

/// Polls (generously bounded, asserting no duration) until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

fn keys(ws: &[TestWitness]) -> Vec<WitnessKey> {
    ws.iter().map(|w| w.key.clone()).collect()
}

fn audit_key(gw: &TestGateway) -> [u8; 32] {
    let k = samgate::keys::load_public_key_pem(&gw.path("keys/audit.pub.pem")).unwrap();
    k.raw.as_slice().try_into().unwrap()
}

async fn metrics(gw: &TestGateway) -> String {
    gw.client("af").get("/metrics").await.text
}

/// The witness value of a metric line with these labels, if present.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|lab| l.contains(lab)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

both_backends!(three_witnesses_quorum_two_and_one_down, |db| async move {
    let (gw, mut ws) = gateway_with_witnesses(db, "q2", 3, 2).await;
    seed(&gw, 5).await;
    let auditor = gw.auditor();
    let head = auditor.get("/v1/audit/tree-head").await;
    assert_eq!(head.status, 200, "{}", head.text);
    let h = head.json();
    let by: Vec<&str> = h["cosigned_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(by.len() >= 2, "quorum reached: {by:?}");
    let note = h["checkpoint"].as_str().unwrap();
    let (cp, found) =
        cosign::open_cosigned(note, &origin(&gw.config), &audit_key(&gw), &keys(&ws), 2).unwrap();
    assert_eq!(cp.tree_size, h["tree_size"].as_u64().unwrap());
    assert_eq!(found.len(), by.len());
    // Every witness gets there in the end, and the age metric is exported per witness.
    let size = cp.tree_size;
    eventually("all three cosign", || async {
        gw.state()
            .witnesses
            .stored(&gw.state().store, size)
            .await
            .unwrap()
            .len()
            == 3
    })
    .await;
    let m = metrics(&gw).await;
    for w in &ws {
        assert!(
            metric(
                &m,
                "samgate_witness_cosignature_age_seconds",
                &[&format!("witness=\"{}\"", w.name)]
            )
            .is_some(),
            "age metric for {}",
            w.name
        );
    }

    // One witness down: heads still reach the quorum, and nothing waits for it.
    ws[0].stop().await;
    seed(&gw, 4).await;
    let h = auditor.get("/v1/audit/tree-head").await.json();
    let by: Vec<String> = h["cosigned_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(!by.contains(&ws[0].name));
    assert_eq!(by.len(), 2, "{by:?}");
    cosign::open_cosigned(
        h["checkpoint"].as_str().unwrap(),
        &origin(&gw.config),
        &audit_key(&gw),
        &keys(&ws),
        2,
    )
    .unwrap();
    assert!(h["tree_size"].as_u64().unwrap() > size);
    // The stored witness still holds the size it cosigned last; the others moved on.
    let stored = ws[1]
        .server
        .as_ref()
        .unwrap()
        .witness
        .store()
        .latest(&origin(&gw.config))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.tree_size >= h["tree_size"].as_u64().unwrap());
    for w in &mut ws {
        w.stop().await;
    }
});

/// `samgate witness serve` of the witness in `wdir`, as a child process.
fn witness_serve(wdir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(["witness", "serve", "--config"])
        .arg(wdir.join("witness.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// An mTLS client presenting the gateway's own client certificate, towards a witness.
fn witness_client(gw: &TestGateway, w: &TestWitness, party_cert: &str) -> Client {
    Client::of(w.server.as_ref().unwrap().addr, gw.dir.path(), party_cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_protocol_answers_per_spec() {
    let (gw, mut ws) = gateway_with_witnesses(Db::Sqlite, "proto", 1, 1).await;
    seed(&gw, 3).await;
    let head = gw.auditor().get("/v1/audit/tree-head").await.json();
    let size = head["tree_size"].as_u64().unwrap();
    let w = &ws[0];
    let c = witness_client(&gw, w, "gateway-client");
    let log_note = {
        let (text, lines) = cosign::split_note(head["checkpoint"].as_str().unwrap()).unwrap();
        format!("{text}\n{}\n", lines[0].line)
    };
    let post = |body: String| {
        let c = c.clone();
        async move {
            c.post_raw("/add-checkpoint", "text/plain", body.into_bytes())
                .await
        }
    };
    // The stored size is `size` now: old 0 is a conflict that tells it.
    let r = post(format!("old 0\n\n{log_note}")).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.headers["content-type"], "text/x.tlog.size");
    assert_eq!(r.text, format!("{size}\n"));
    // The same tree again is cosigned again, and the line verifies.
    let r = post(format!("old {size}\n\n{log_note}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let line = cosign::parse_signature_line(r.text.trim_end()).unwrap();
    let (text, _) = cosign::split_note(&log_note).unwrap();
    cosign::verify_line(text, &line, &w.key).unwrap();
    // old larger than the checkpoint: 400. Malformed: 400.
    assert_eq!(
        post(format!("old {}\n\n{log_note}", size + 1)).await.status,
        400
    );
    assert_eq!(post("old 1\nnot-base64\n\nx\n".into()).await.status, 400);
    // An unknown origin: 404.
    let other = log_note.replacen(&origin(&gw.config), "samgate/elsewhere", 1);
    assert_eq!(post(format!("old 0\n\n{other}")).await.status, 404);
    // A signature that does not verify: 403.
    let forged = log_note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 5), 1);
    assert_eq!(post(format!("old {size}\n\n{forged}")).await.status, 403);
    // A client certificate of the same CA that is not pinned gets no answer at all.
    let stranger = witness_client(&gw, w, "af");
    assert!(stranger
        .http
        .post(format!("{}/add-checkpoint", stranger.base))
        .body("old 0\n\nx\n")
        .send()
        .await
        .is_err());
    for w in &mut ws {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_log_is_refused_by_the_witness_and_reported_by_the_gateway() {
    let (mut gw, mut ws) = gateway_with_witnesses(Db::Sqlite, "fork", 1, 1).await;
    let w_name = ws[0].name.clone();
    let org = origin(&gw.config);
    // Log A reaches size 4 and the witness cosigns it.
    seed(&gw, 4).await;
    gw.state().audit.sign_head().await.unwrap();
    eventually("A's head of size 4 is cosigned", || async {
        gw.state()
            .witnesses
            .stored(&gw.state().store, 4)
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    gw.stop().await;

    // The operator starts over from another database with the same keys: a fork. Its
    // tree of size 4 differs (other records), and the witness refuses it.
    let mut forked = gw.config.clone();
    forked.storage.url = format!("sqlite://{}", gw.path("data/forked.db").display());
    let b = start_gateway(forked).await;
    let b_gw = TestGateway {
        dir: tempfile::tempdir().unwrap(),
        config: gw.config.clone(),
        gw: Some(b),
        recipients: HashMap::new(),
    };
    for _ in 0..4 {
        let r = samgate::audit::record::AuditRecord {
            reason: Some("forked history".into()),
            ..samgate::audit::record::AuditRecord::new(
                samgate::audit::record::Action::AuditQuery,
                samgate::audit::record::Decision::Permit,
            )
        };
        b_gw.state().audit.append(r, vec![]).await.unwrap();
    }
    b_gw.state().audit.sign_head().await.unwrap();
    let refused = |reason: &'static str| {
        let w_name = w_name.clone();
        async move {
            // The recorder is process-wide; the witness name is unique to this test.
            let m = samgate::telemetry::metrics_handle().render();
            metric(
                &m,
                "samgate_witness_refusals_total",
                &[
                    &format!("witness=\"{w_name}\""),
                    &format!("reason=\"{reason}\""),
                ],
            )
            .is_some_and(|v| v >= 1.0)
        }
    };
    eventually("the gateway reports the fork", || refused("fork")).await;
    assert!(b_gw
        .state()
        .witnesses
        .stored(&b_gw.state().store, 4)
        .await
        .unwrap()
        .is_empty());
    let store = ws[0].server.as_ref().unwrap().witness.store();
    let latest = store.latest(&org).await.unwrap().unwrap();
    assert_eq!(latest.tree_size, 4, "the witness keeps A's tree");
    assert!(
        store.refusal_count().await.unwrap() >= 1,
        "the refusal is kept as evidence"
    );

    // The forked log grows: its proof from size 4 cannot match A's root (422).
    for _ in 0..3 {
        b_gw.state()
            .audit
            .append(
                samgate::audit::record::AuditRecord::new(
                    samgate::audit::record::Action::AuditQuery,
                    samgate::audit::record::Decision::Permit,
                ),
                vec![],
            )
            .await
            .unwrap();
    }
    b_gw.state().audit.sign_head().await.unwrap();
    eventually("the gateway reports the inconsistent proof", || {
        refused("inconsistent")
    })
    .await;
    assert_eq!(store.latest(&org).await.unwrap().unwrap().tree_size, 4);
    assert!(store.refusal_count().await.unwrap() >= 2);
    let logs =
        String::from_utf8_lossy(&crate::harness::captured_logs().lock().unwrap()).to_string();
    assert!(
        logs.contains("refused a signed checkpoint"),
        "the witness logs it"
    );
    assert!(
        logs.contains("may have been forked or rolled back"),
        "the gateway logs it"
    );
    let mut b_gw = b_gw;
    b_gw.stop().await;
    for w in &mut ws {
        w.stop().await;
    }
}

fn failure(r: Result<samgate::audit::verify::Summary, VerifyError>) -> Failure {
    match r {
        Err(VerifyError::Failed(f)) => f,
        other => panic!("expected a failed check, got {other:?}"),
    }
}

/// Writes export lines (records, then a head line) to a file.
fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn run_verify(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_rollback_and_extension_of_an_export_are_caught_with_a_kept_checkpoint() {
    let (gw, mut ws) = gateway_with_witnesses(Db::Sqlite, "kept", 3, 2).await;
    seed(&gw, 6).await;
    let auditor = gw.auditor();
    // An older genuine head, as a log operator could show it later.
    let old_head = auditor.get("/v1/audit/tree-head").await.json();
    let old_size = old_head["tree_size"].as_u64().unwrap();
    seed(&gw, 6).await;
    // The head an auditor keeps, cosigned by the witnesses.
    let kept_head = auditor.get("/v1/audit/tree-head").await.json();
    let kept_size = kept_head["tree_size"].as_u64().unwrap();
    assert!(kept_head["cosigned_by"].as_array().unwrap().len() >= 2);
    let kept_file = gw.path("kept-checkpoint.txt");
    std::fs::write(&kept_file, kept_head["checkpoint"].as_str().unwrap()).unwrap();
    seed(&gw, 3).await;
    let export = auditor.get("/v1/audit/export").await;
    assert_eq!(export.status, 200);
    let lines: Vec<String> = export.text.lines().map(str::to_owned).collect();
    let (records, head_line) = lines.split_at(lines.len() - 1);
    let full = gw.path("full.ndjson");
    write_lines(&full, &lines);
    let key = audit_key(&gw);
    let kept = KeptCheckpoint {
        note: kept_head["checkpoint"].as_str().unwrap().to_owned(),
        witnesses: keys(&ws),
        quorum: 2,
    };
    use samgate::audit::verify::verify_export_kept;
    let s = verify_export_kept(&full, key, Some(&kept)).unwrap();
    assert_eq!(s.records as usize, records.len());

    // Rollback: the records up to an older genuine head, with that head. Without the kept
    // checkpoint it verifies; with it, the missing size is named.
    let rolled = gw.path("rolled.ndjson");
    let mut r: Vec<String> = records[..old_size as usize].to_vec();
    r.push(serde_json::json!({ "tree_head": old_head }).to_string());
    write_lines(&rolled, &r);
    verify_export_kept(&rolled, key, None).unwrap();
    let f = failure(verify_export_kept(&rolled, key, Some(&kept)));
    assert_eq!(f.seq, old_size + 1);
    assert!(
        f.reason.contains(&format!("covers {kept_size} records")),
        "{}",
        f.reason
    );
    let pub_key = gw.path("keys/audit.pub.pem");
    let mut args: Vec<String> = ["audit", "verify", "--export"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(rolled.display().to_string());
    args.extend(["--public-key".to_owned(), pub_key.display().to_string()]);
    args.extend(["--checkpoint".to_owned(), kept_file.display().to_string()]);
    for w in &ws {
        args.extend(["--witness-key".to_owned(), w.vkey.display().to_string()]);
    }
    args.extend(["--quorum".to_owned(), "2".to_owned()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = run_verify(&argv);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with(&format!("seq {}: missing", old_size + 1)),
        "{err}"
    );
    assert!(err.contains(&kept_size.to_string()), "{err}");
    // The untouched export passes the same command.
    let mut ok_args = argv.clone();
    let pos = ok_args
        .iter()
        .position(|a| *a == rolled.to_str().unwrap())
        .unwrap();
    let full_s = full.display().to_string();
    ok_args[pos] = &full_s;
    let (code, out, err) = run_verify(&ok_args);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("kept checkpoint of tree size"), "{out}");

    // Truncation: records cut short under the export's own head.
    let cut = gw.path("cut.ndjson");
    let mut c: Vec<String> = records[..records.len() - 2].to_vec();
    c.push(head_line[0].clone());
    write_lines(&cut, &c);
    let f = failure(verify_export_kept(&cut, key, Some(&kept)));
    assert_eq!(f.seq, records.len() as u64 - 1);

    // Extension: records beyond the head they are shipped with.
    let ext = gw.path("ext.ndjson");
    let mut e: Vec<String> = records.to_vec();
    e.push(serde_json::json!({ "tree_head": kept_head }).to_string());
    write_lines(&ext, &e);
    let f = failure(verify_export_kept(&ext, key, None));
    assert_eq!(f.seq, kept_size + 1);
    assert!(f.reason.contains("not covered"), "{}", f.reason);

    // A smaller kept checkpoint (log-signed only) is contained too.
    let kept_small = KeptCheckpoint {
        note: old_head["checkpoint"].as_str().unwrap().to_owned(),
        witnesses: keys(&ws),
        quorum: 0,
    };
    verify_export_kept(&full, key, Some(&kept_small)).unwrap();

    // Too few cosignatures for the quorum asked: refused, naming the checkpoint's size.
    let strict = KeptCheckpoint {
        quorum: 3,
        ..kept.clone()
    };
    let three = gw
        .state()
        .witnesses
        .stored(&gw.state().store, kept_size)
        .await
        .unwrap()
        .len();
    if three < 3 {
        let f = failure(verify_export_kept(&full, key, Some(&strict)));
        assert_eq!(f.seq, kept_size);
    }
    for w in &mut ws {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_database_is_caught_with_a_kept_checkpoint() {
    let (mut gw, mut ws) = gateway_with_witnesses(Db::Sqlite, "dbroll", 1, 1).await;
    seed(&gw, 5).await;
    gw.state().audit.sign_head().await.unwrap();
    let old = samgate::audit::query::latest_head(&gw.state().store)
        .await
        .unwrap()
        .unwrap();
    seed(&gw, 5).await;
    let kept_head = gw.auditor().get("/v1/audit/tree-head").await.json();
    let kept_size = kept_head["tree_size"].as_u64().unwrap();
    gw.stop().await;
    for w in &mut ws {
        w.stop().await;
    }
    // Roll the database back to the older head: records, nodes, heads and state.
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&gw.config.storage.url)
        .await
        .unwrap();
    let n = old.tree_size as i64;
    let leaves: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT leaf FROM audit_records WHERE seq <= $1 ORDER BY seq")
            .bind(n)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut frontier = samgate::audit::merkle::Frontier::new();
    for l in &leaves {
        frontier.push(samgate::audit::merkle::leaf_hash(l)).unwrap();
    }
    for sql in [
        "DELETE FROM audit_records WHERE seq > $1",
        "DELETE FROM tree_heads WHERE tree_size > $1",
        "DELETE FROM tree_head_cosignatures WHERE tree_size > $1",
    ] {
        sqlx::query(sql).bind(n).execute(&mut conn).await.unwrap();
    }
    sqlx::query("DELETE FROM merkle_nodes WHERE (idx + 1) * (1 << level) > $1")
        .bind(n)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_state SET tree_size = $1, frontier = $2 WHERE id = 1")
        .bind(n)
        .bind(frontier.to_bytes())
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let config = gw.path("samgate.toml");
    // The rollback is invisible without a kept checkpoint...
    samgate::audit::cli::verify_config(&config).await.unwrap();
    // ...and named with one.
    let kept = KeptCheckpoint {
        note: kept_head["checkpoint"].as_str().unwrap().to_owned(),
        witnesses: keys(&ws),
        quorum: 1,
    };
    // The harness database is not the one in samgate.toml: verify the store directly.
    let store = samgate::store::Store::connect(&gw.config.storage)
        .await
        .unwrap();
    let f = failure(
        samgate::audit::verify::verify_store_kept(
            &store,
            &origin(&gw.config),
            audit_key(&gw),
            Some(&kept),
        )
        .await,
    );
    assert_eq!(f.seq, old.tree_size + 1);
    assert!(
        f.reason.contains(&format!("covers {kept_size} records")),
        "{}",
        f.reason
    );
    store.close().await;
}

both_backends!(
    a_disclosure_with_proofs_verifies_offline_and_not_after_one_byte_changes,
    |db| async move {
        let (gw, mut ws) = gateway_with_witnesses(db, "disc", 3, 2).await;
        seed(&gw, 9).await;
        let intake = gw.client("sfk-kalmar");
        let r = intake
            .post(
                "/v1/disclosures",
                &serde_json::json!({"personnummer": PNR_A, "proofs": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let doc = r.json();
        let items = doc["disclosures"].as_array().unwrap();
        assert!(!items.is_empty());
        for it in items {
            assert!(it["leaf"].is_string() && it["inclusion_proof"]["hashes"].is_array());
            assert!(
                it["checkpoint"]
                    .as_str()
                    .unwrap()
                    .matches('\u{2014}')
                    .count()
                    >= 3,
                "log + 2 cosignatures"
            );
        }
        // Without proofs the extract is as before.
        let plain = intake
            .post(
                "/v1/disclosures",
                &serde_json::json!({"personnummer": PNR_A}),
            )
            .await
            .json();
        assert!(plain["disclosures"][0].get("leaf").is_none());

        let key = audit_key(&gw);
        let wk = keys(&ws);
        let s = samgate::audit::disclosure_proofs::verify_value(&doc, &key, &wk, 2).unwrap();
        assert_eq!(s.items, items.len());
        assert!(s.cosigned_by.len() >= 2);
        // The binary, from a file, as a participant's lawyer would run it.
        let file = gw.path("extract.json");
        std::fs::write(&file, &r.text).unwrap();
        let mut args = vec![
            "audit".to_owned(),
            "verify".into(),
            "--disclosure".into(),
            file.display().to_string(),
            "--public-key".into(),
            gw.path("keys/audit.pub.pem").display().to_string(),
            "--quorum".into(),
            "2".into(),
        ];
        for w in &ws {
            args.extend(["--witness-key".to_owned(), w.vkey.display().to_string()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run_verify(&argv);
        assert_eq!(code, Some(0), "{out} {err}");
        assert!(
            out.starts_with(&format!("verified {} disclosures", items.len())),
            "{out}"
        );

        // One byte changed anywhere that matters: refused.
        let text = r.text.clone();
        let first = &items[0];
        let leaf = first["leaf"].as_str().unwrap();
        let hash = first["inclusion_proof"]["hashes"][0].as_str().unwrap_or("");
        let targets = [
            ("leaf", leaf.to_owned()),
            ("to", format!("\"to\":{}", first["to"])),
            ("hash", hash.to_owned()),
            (
                "root line",
                first["checkpoint"]
                    .as_str()
                    .unwrap()
                    .split('\n')
                    .nth(2)
                    .unwrap()
                    .to_owned(),
            ),
            ("time", first["time"].as_str().unwrap().to_owned()),
        ];
        for (what, needle) in targets {
            if needle.is_empty() {
                continue;
            }
            let at = text
                .find(&needle)
                .unwrap_or_else(|| panic!("{what} not in the extract"));
            let i = at + needle.len() / 2;
            let mut bytes = text.clone().into_bytes();
            // Never `a` -> `A`: hex decodes either case to the same byte.
            bytes[i] = if bytes[i].eq_ignore_ascii_case(&b'a') {
                b'B'
            } else if bytes[i].is_ascii_digit() {
                b'0' + (bytes[i] - b'0' + 1) % 10
            } else {
                b'A'
            };
            std::fs::write(&file, &bytes).unwrap();
            let (code, _, err) = run_verify(&argv);
            assert_eq!(code, Some(1), "changing {what} must fail: {err}");
            assert!(err.starts_with("seq "), "{what}: {err}");
        }
        for w in &mut ws {
            w.stop().await;
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_binary_inits_serves_and_cosigns_and_init_wires_one_per_agency() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    // `samgate init` wrote a witness per agency, wired into samgate.toml with quorum 3.
    let written = Config::load(&gw.path("samgate.toml")).unwrap();
    let names: Vec<&str> = written.witnesses.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fk-witness",
            "af-witness",
            "kommun-kalmar-witness",
            "region-kalmar-witness"
        ]
    );
    assert_eq!(written.audit.witness_quorum, 3);
    for party in ["fk", "af", "kommun-kalmar", "region-kalmar"] {
        let wc = WitnessConfig::load(&gw.path(&format!("witnesses/{party}/witness.toml"))).unwrap();
        assert_eq!(wc.logs[0].origin, origin(&gw.config));
        assert_eq!(wc.client_pins.len(), 1);
    }

    // A witness as an agency would set it up, with the binary.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let der = samgate::pki::first_certificate_der(
        &std::fs::read_to_string(gw.path("pki/gateway-client.pem")).unwrap(),
    )
    .unwrap();
    let pin = samgate::pki::spki_sha256_hex(&der).unwrap();
    let wdir = gw.path("agency-witness");
    let p = |rel: &str| gw.path(rel).display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let org = origin(&gw.config);
    let (code, out, err) = run_verify(&[
        "witness",
        "init",
        "--dir",
        wdir.to_str().unwrap(),
        "--name",
        "agency-witness",
        "--listen",
        &listen,
        "--log-origin",
        &org,
        "--log-key",
        &p("keys/audit.pub.pem"),
        "--client-ca",
        &p("pki/ca.pem"),
        "--client-sha256",
        &pin,
        "--ca-cert",
        &p("pki/ca.pem"),
        "--ca-key",
        &p("pki/ca.key"),
    ]);
    assert_eq!(code, Some(0), "{out} {err}");
    let key = WitnessKey::load(&wdir.join("witness.vkey"), Some("agency-witness")).unwrap();
    assert!(out.contains(&key.to_vkey()), "{out}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(wdir.join("witness.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A second init into the same directory is refused.
    let (code, _, _) = run_verify(&[
        "witness",
        "init",
        "--dir",
        wdir.to_str().unwrap(),
        "--name",
        "x",
    ]);
    assert_eq!(code, Some(2));

    let mut child = witness_serve(&wdir);
    eventually("the witness listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let head = gw.auditor().get("/v1/audit/tree-head").await.json();
    let note = head["checkpoint"].as_str().unwrap();
    let c = Client::of(
        format!("127.0.0.1:{port}").parse().unwrap(),
        gw.dir.path(),
        "gateway-client",
    );
    let r = c
        .post_raw(
            "/add-checkpoint",
            "text/plain",
            format!("old 0\n\n{note}").into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cosigned = cosign::append_lines(note, [r.text.as_str()]);
    cosign::open_cosigned(&cosigned, &org, &audit_key(&gw), &[key], 1).unwrap();
    // The witness keeps the size across a restart of the process.
    child.kill().unwrap();
    let _ = child.wait();
    let mut child = witness_serve(&wdir);
    let mut tries = 0;
    let r = loop {
        tries += 1;
        assert!(tries < 600, "the restarted witness never answered");
        let attempt = c
            .http
            .post(format!("{}/add-checkpoint", c.base))
            .body(format!("old 0\n\n{note}"))
            .send()
            .await;
        match attempt {
            Ok(r) => break r,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.text().await.unwrap(), format!("{}\n", head["tree_size"]));
    child.kill().unwrap();
    let _ = child.wait();
}
