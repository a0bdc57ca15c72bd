//! `samgate audit verify` and the log's integrity: an export verifies,
//! tampering with a real SQLite database is named by seq, and concurrent
//! appends make one gap-free tree.

use std::process::Command;

use samgate::audit::merkle::{self, Frontier};
use samgate::audit::record::AuditRecord;
use samgate::audit::verify::{Failure, Summary, VerifyError};
use sqlx::Connection;

use crate::audit::{rec, seed, PNR_A};
use crate::both_backends;
use crate::harness::{Db, TestGateway};

/// Records in the tamper tests.
const N: u64 = 20;

/// A stopped gateway whose SQLite log has `N` records under a final signed head.
async fn stopped_log() -> TestGateway {
    let mut gw = TestGateway::spawn(Db::Sqlite).await;
    seed(&gw, N as usize).await;
    gw.stop().await; // signs the final head
    gw
}

async fn db(gw: &TestGateway) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&gw.config.storage.url)
        .await
        .unwrap()
}

async fn verify(gw: &TestGateway) -> Result<Summary, VerifyError> {
    samgate::audit::cli::verify_config(&gw.path("samgate.toml")).await
}

/// Closes the tampering connection and runs the verifier, which must fail.
async fn failure_after(conn: sqlx::AnyConnection, gw: &TestGateway) -> Failure {
    conn.close().await.unwrap();
    failure(verify(gw).await)
}

fn failure(r: Result<Summary, VerifyError>) -> Failure {
    match r {
        Err(VerifyError::Failed(f)) => f,
        other => panic!("expected a failed check, got {other:?}"),
    }
}

async fn leaf(conn: &mut sqlx::AnyConnection, seq: i64) -> Vec<u8> {
    sqlx::query_scalar("SELECT leaf FROM audit_records WHERE seq = $1")
        .bind(seq)
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn set_leaf(conn: &mut sqlx::AnyConnection, seq: i64, leaf: Vec<u8>) {
    sqlx::query("UPDATE audit_records SET leaf = $1 WHERE seq = $2")
        .bind(leaf)
        .bind(seq)
        .execute(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_database_verifies_with_the_binary() {
    let gw = stopped_log().await;
    let s = verify(&gw).await.unwrap();
    assert_eq!((s.records, s.signed_size), (N, N));
    let out = Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(["audit", "verify", "--config"])
        .arg(gw.path("samgate.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("verified {N} records, root {}", hex::encode(s.root))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_leaf_is_named() {
    let gw = stopped_log().await;
    let mut conn = db(&gw).await;
    let mut l = leaf(&mut conn, 7).await;
    let mid = l.len() / 2;
    l[mid] ^= 0x01;
    set_leaf(&mut conn, 7, l).await;
    assert_eq!(failure_after(conn, &gw).await.seq, 7);
    let out = Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(["audit", "verify", "--config"])
        .arg(gw.path("samgate.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("seq 7: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_column_is_named() {
    let gw = stopped_log().await;
    let mut conn = db(&gw).await;
    sqlx::query("UPDATE audit_records SET decision = 'permit' WHERE seq = 6")
        .execute(&mut conn)
        .await
        .unwrap();
    let f = failure_after(conn, &gw).await;
    assert_eq!(f.seq, 6);
    assert!(f.reason.contains("decision"), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_last_record_is_caught_by_the_signed_head() {
    let gw = stopped_log().await;
    let mut conn = db(&gw).await;
    sqlx::query("DELETE FROM audit_records WHERE seq = $1")
        .bind(N as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    let f = failure_after(conn, &gw).await;
    assert_eq!(
        f.to_string(),
        format!("seq {N}: missing (signed tree head covers {N} records)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_leaves_are_named() {
    let gw = stopped_log().await;
    let mut conn = db(&gw).await;
    let (l3, l8) = (leaf(&mut conn, 3).await, leaf(&mut conn, 8).await);
    set_leaf(&mut conn, 3, l8).await;
    set_leaf(&mut conn, 8, l3).await;
    assert_eq!(failure_after(conn, &gw).await.seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_leaf_with_its_node_and_columns_breaks_the_signed_root() {
    let gw = stopped_log().await;
    let mut conn = db(&gw).await;
    let mut r = AuditRecord::from_leaf(&leaf(&mut conn, 4).await).unwrap();
    r.withheld.clear();
    let l = r.leaf_bytes();
    sqlx::query("UPDATE merkle_nodes SET hash = $1 WHERE level = 0 AND idx = 3")
        .bind(merkle::leaf_hash(&l).to_vec())
        .execute(&mut conn)
        .await
        .unwrap();
    set_leaf(&mut conn, 4, l).await;
    let f = failure_after(conn, &gw).await;
    assert!(f.seq <= 4 && f.reason.contains("signed tree head"), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_head_signature_is_detected() {
    let gw = stopped_log().await;
    let mut conn = db(&gw).await;
    let cp: String = sqlx::query_scalar("SELECT checkpoint FROM tree_heads WHERE tree_size = $1")
        .bind(N as i64)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // Flip one bit of the Ed25519 signature in the signature line.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = cp.trim_end_matches('\n');
    let (head, sig) = body.rsplit_once(' ').unwrap();
    let mut raw = b64.decode(sig).unwrap();
    raw[20] ^= 0x01;
    let forged = format!("{head} {}\n", b64.encode(raw));
    sqlx::query("UPDATE tree_heads SET checkpoint = $1 WHERE tree_size = $2")
        .bind(forged)
        .bind(N as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    let f = failure_after(conn, &gw).await;
    assert_eq!(f.seq, N);
    assert!(f.reason.contains("does not verify"), "{f}");
}

both_backends!(a_full_export_verifies_offline, |db| async move {
    let gw = TestGateway::spawn(db).await;
    seed(&gw, 25).await;
    let rsp = gw.auditor().get("/v1/audit/export").await;
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.headers["content-type"], "application/x-ndjson");
    crate::audit::assert_no_pnr(&rsp.text);
    let lines: Vec<&str> = rsp.text.lines().collect();
    // 25 records, the export's own audit-query record, then the head.
    assert_eq!(lines.len(), 27);
    assert!(lines[26].starts_with("{\"tree_head\":"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.ndjson");
    std::fs::write(&file, &rsp.text).unwrap();
    let key = gw.path("keys/audit.pub.pem");
    let s = samgate::audit::cli::verify_export_file(&file, &key).unwrap();
    assert_eq!((s.records, s.signed_size), (26, 26));
    let out = Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(["audit", "verify", "--export"])
        .arg(&file)
        .arg("--public-key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("verified 26 records, root "));
    // A changed field, a dropped line and a truncated file are each named.
    let changed = rsp
        .text
        .replacen("\"exchange-denied\"", "\"exchange-forwarded\"", 1);
    std::fs::write(&file, &changed).unwrap();
    let f = failure(samgate::audit::cli::verify_export_file(&file, &key));
    assert_eq!(f.seq, 3, "{f}");
    let dropped: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 9)
        .map(|(_, l)| *l)
        .collect();
    std::fs::write(&file, dropped.join("\n")).unwrap();
    assert_eq!(
        failure(samgate::audit::cli::verify_export_file(&file, &key)).seq,
        10
    );
    std::fs::write(&file, lines[..20].join("\n")).unwrap();
    assert!(matches!(
        samgate::audit::cli::verify_export_file(&file, &key),
        Err(VerifyError::Failed(_))
    ));
    // Part of the log: records 5..=9, ending with the head.
    let rsp = gw
        .auditor()
        .get("/v1/audit/export?from_seq=5&to_seq=9")
        .await;
    let lines: Vec<&str> = rsp.text.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[0].contains("\"seq\":5"));
});

both_backends!(concurrent_appends_make_one_gap_free_tree, |db| async move {
    let gw = TestGateway::spawn(db).await;
    let subject = Some(gw.audit_pseudonym(PNR_A));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let state = gw.state().clone();
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..1000 / 16 + usize::from(t < 1000 % 16) {
                let r = rec("exchange-forwarded", "af", "fk", "permit", subject.clone());
                let _ = i;
                seqs.push(state.audit.append(r, vec![]).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1000).collect::<Vec<u64>>());
    let mut conn = {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&gw.config.storage.url)
            .await
            .unwrap()
    };
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, leaf FROM audit_records ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=1000).collect::<Vec<i64>>()
    );
    let hashes: Vec<_> = rows.iter().map(|r| merkle::leaf_hash(&r.1)).collect();
    for (i, (_, l)) in rows.iter().enumerate() {
        assert_eq!(AuditRecord::from_leaf(l).unwrap().seq, i as u64 + 1);
    }
    let state: Vec<u8> = sqlx::query_scalar("SELECT frontier FROM audit_state WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let root = merkle::root_from_leaves(&hashes);
    assert_eq!(Frontier::from_bytes(&state).unwrap().root(), root);
    gw.state().audit.sign_head().await.unwrap();
    let head = samgate::audit::query::latest_head(&gw.state().store)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((head.tree_size, head.root_hash), (1000, root));
    conn.close().await.unwrap();
});
