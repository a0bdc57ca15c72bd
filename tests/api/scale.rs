//! Scale-out and failure (issue 9): PostgreSQL outage, several instances on
//! one database, crash safety.

use std::collections::HashMap;
use std::time::Duration;

use samgate::http::server::Gateway;
use serde_json::json;

use crate::harness::{
    backend_available, count, now, record_consent, via_proxy, ChaosProxy, Db, TestGateway,
    ALL_PARTIES, ALVA,
};

const CATEGORIES: &[&str] = &["attendance", "case", "health", "outcome", "employment"];

fn attendance() -> serde_json::Value {
    json!({"to": "fk", "type": "attendance-report", "purpose": "samordnad-rehabilitering", "subject": ALVA,
           "payload": {"period": {"start": "2026-10-01", "end": "2026-10-31"}, "attended_hours": 20, "absence_reason_category": "care"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_gives_503_forwards_nothing_and_recovers() {
    if !backend_available(Db::Postgres).await {
        return;
    }
    let proxy = ChaosProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let p2 = proxy.clone();
    let gw = TestGateway::spawn_with(Db::Postgres, move |c| {
        c.storage.url = via_proxy(&c.storage.url, &p2);
        c.storage.acquire_timeout = Duration::from_millis(500);
    })
    .await;
    record_consent(&gw, ALVA, ALL_PARTIES, CATEGORIES).await;
    let af = gw.client("af");
    assert_eq!(af.post_exchange(&attendance()).await.status, 200);

    proxy.cut();
    // Let the pool notice its connections are gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let rsp = af.post_exchange(&attendance()).await;
        assert_eq!(rsp.problem_code(), (503, "unavailable"), "{}", rsp.text);
    }
    let ready = gw.client("fk").get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        gw.recipient("fk").received().len(),
        1,
        "something was forwarded during the outage"
    );

    proxy.restore();
    let mut ok = false;
    for _ in 0..50 {
        let rsp = af.post_exchange(&attendance()).await;
        if rsp.status == 200 {
            ok = true;
            break;
        }
        assert_eq!(rsp.status, 503, "{}", rsp.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the gateway did not recover");
    assert_eq!(gw.client("fk").get("/readyz").await.status, 200);
    let delivered = count(
        gw.pool(),
        "SELECT COUNT(*) FROM audit_records WHERE action = 'exchange-delivered'",
    )
    .await;
    assert_eq!(delivered as usize, gw.recipient("fk").received().len());
}

/// Two instances on one database, and Alva's consent (its id) recorded
/// through the first.
async fn two_instances(db: Db) -> (TestGateway, Gateway, String) {
    let gw = TestGateway::spawn(db).await;
    let gw2 = gw.second_instance().await;
    let id = record_consent(&gw, ALVA, ALL_PARTIES, CATEGORIES).await;
    (gw, gw2, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_share_one_gap_free_log() {
    if !backend_available(Db::Postgres).await {
        return;
    }
    let (gw, gw2, _) = two_instances(Db::Postgres).await;

    let clients = [gw.client("af"), gw.client_of(&gw2, "af")];
    let total = 2000usize;
    let per_task = total / 16;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = clients[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_task {
                let mut m = attendance();
                m["delivery"] = json!(if i % 4 == 0 { "async" } else { "sync" });
                let rsp = c.post_exchange(&m).await;
                assert!(rsp.status == 200 || rsp.status == 202, "{}", rsp.text);
                ids.push(rsp.exchange_id());
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert_eq!(acknowledged.len(), total);
    // Wait for the async ones.
    let fk = gw.recipient("fk");
    for _ in 0..400 {
        if fk.received().len() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in fk.received() {
        *seen.entry(r.exchange_id()).or_default() += 1;
    }
    for id in &acknowledged {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "exchange not delivered exactly once"
        );
    }
    assert_eq!(seen.len(), total);

    let pool = gw.pool().clone();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit_records ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, i as i64 + 1, "gap in seq");
    }
    let forwarded = count(
        &pool,
        "SELECT COUNT(*) FROM audit_records WHERE action = 'exchange-forwarded'",
    )
    .await;
    let delivered = count(
        &pool,
        "SELECT COUNT(*) FROM audit_records WHERE action = 'exchange-delivered'",
    )
    .await;
    assert_eq!((forwarded as usize, delivered as usize), (total, total));

    // One tree: the root over every leaf equals the root of the newest head,
    // whichever instance signed it, and every head is a prefix of the log.
    gw.state().audit.sign_head().await.unwrap();
    let leaves: Vec<Vec<u8>> = sqlx::query_scalar("SELECT leaf FROM audit_records ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let hashes: Vec<[u8; 32]> = leaves
        .iter()
        .map(|l| samgate::audit::merkle::leaf_hash(l))
        .collect();
    let heads: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT tree_size, root_hash FROM tree_heads ORDER BY tree_size")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(heads.len() >= 2);
    for (size, root) in &heads {
        let expect = samgate::audit::merkle::root_from_leaves(&hashes[..*size as usize]);
        assert_eq!(
            root.as_slice(),
            expect.as_slice(),
            "head {size} is not a prefix of the log"
        );
    }
    assert_eq!(heads.last().unwrap().0 as usize, hashes.len());
    // And the offline verifier agrees.
    let origin = format!("samgate/{}", gw.config.server.deployment_id);
    let key = gw.state().crypto.audit_signer.public_key();
    let summary = samgate::audit::verify::verify_store(&gw.state().store, &origin, key)
        .await
        .unwrap();
    assert_eq!(summary.records as usize, hashes.len());
    gw2.shutdown().await;
    let _ = now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_idempotency_are_visible_to_the_other_instance_at_once() {
    if !backend_available(Db::Postgres).await {
        return;
    }
    let (gw, gw2, id) = two_instances(Db::Postgres).await;
    let af2 = gw.client_of(&gw2, "af");
    let intake2 = gw.client_of(&gw2, "sfk-kalmar");
    // Idempotency: the same key on both instances sends once.
    let a = gw
        .client("af")
        .post_exchange_with(&attendance(), &[("Idempotency-Key", "x-1")])
        .await;
    let b = af2
        .post_exchange_with(&attendance(), &[("Idempotency-Key", "x-1")])
        .await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.json()["exchange_id"], b.json()["exchange_id"]);
    assert_eq!(gw.recipient("fk").received().len(), 1);
    // Revocation on instance 2 is effective on instance 1 for the next request.
    assert_eq!(
        gw.client("af").post_exchange(&attendance()).await.status,
        200
    );
    let rev = intake2
        .post(&format!("/v1/consents/{id}/revocation"), &json!({}))
        .await;
    assert_eq!(rev.status, 200);
    let rsp = gw.client("af").post_exchange(&attendance()).await;
    assert_eq!(rsp.problem_code(), (403, "consent_revoked"));
    gw2.shutdown().await;
}

// Issue 15: the exchange path decides from a per-process consent cache.
// A revocation on instance A must still refuse the very next exchange on
// instance B, which has the consent cached from an earlier exchange: B's
// `exchange-forwarded` append carries a version guard that fails, B decides
// again from the database, and nothing leaves. (Two instances on one SQLite
// file work the same way: the guard runs under the database's write lock.)
crate::both_backends!(
    a_revocation_on_one_instance_refuses_the_next_exchange_on_another,
    |db: Db| async move {
        let (a, b, id) = two_instances(db).await;
        let af_b = a.client_of(&b, "af");
        // B decides twice (the second time from its cache, if it has one).
        for _ in 0..2 {
            let rsp = af_b.post_exchange(&attendance()).await;
            assert_eq!(rsp.status, 200, "{}", rsp.text);
        }
        let forwarded = || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit_records WHERE action = 'exchange-forwarded'",
            )
            .fetch_one(a.state().store.pool())
            .await
            .unwrap();
            n
        };
        // What fk received other than the revocation notice of DESIGN §13
        // (which the outbox of either instance may deliver at any time).
        let messages = || {
            a.recipient("fk")
                .received()
                .iter()
                .filter(|r| r.json()["type"] == "attendance-report")
                .count()
        };
        assert_eq!(forwarded().await, 2);
        assert_eq!(messages(), 2);

        // A revokes; the revocation has returned before B's next exchange starts.
        let rev = a
            .client("sfk-kalmar")
            .post(&format!("/v1/consents/{id}/revocation"), &json!({}))
            .await;
        assert_eq!(rev.status, 200, "{}", rev.text);

        let rsp = af_b.post_exchange(&attendance()).await;
        assert_eq!(rsp.problem_code(), (403, "consent_revoked"), "{}", rsp.text);
        assert_eq!(messages(), 2, "a message left after the revocation");
        assert_eq!(
            forwarded().await,
            2,
            "an exchange-forwarded record was written after the revocation"
        );
        // The refusal is itself recorded, once, with the exchange's id.
        let denied: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_records WHERE action = 'exchange-denied' AND exchange_id = $1",
        )
        .bind(rsp.json()["exchange_id"].as_str().unwrap().to_owned())
        .fetch_one(a.state().store.pool())
        .await
        .unwrap();
        assert_eq!(denied, 1);
        b.shutdown().await;
    }
);

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let cfg = samgate::config::Config::load(&dir.path().join("samgate.toml")).unwrap();
    let store = samgate::store::Store::open(&cfg.storage).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', TRUE, X'00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
    let err = samgate::store::Store::open(&cfg.storage).await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn secrets_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let key = std::fs::read(dir.path().join("keys/pseudonym.key")).unwrap();
    let var = format!("SAMGATE_TEST_PSEUDONYM_{}", uuid::Uuid::new_v4().simple());
    std::env::set_var(&var, hex::encode(&key));
    let path = dir.path().join("samgate.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "pseudonym_master = \"keys/pseudonym.key\"",
        &format!("pseudonym_master = \"env:{var}\""),
    );
    std::fs::write(&path, text).unwrap();
    let cfg = samgate::config::Config::load(&path).unwrap();
    assert_eq!(
        cfg.keys.pseudonym_master,
        samgate::config::SecretSource::Env(var.clone())
    );
    let from_env = samgate::crypto::Crypto::load(&cfg).unwrap();
    let mut file_cfg = cfg.clone();
    file_cfg.keys.pseudonym_master =
        samgate::config::SecretSource::File(dir.path().join("keys/pseudonym.key"));
    let from_file = samgate::crypto::Crypto::load(&file_cfg).unwrap();
    let today = samgate::clock::Clock::now(&samgate::clock::SystemClock).date();
    let p = samgate::subject::personnummer::Personnummer::parse_at(ALVA, today).unwrap();
    assert_eq!(from_env.audit_pseudonym(&p), from_file.audit_pseudonym(&p));
    // An unset variable is a configuration error naming the key.
    std::env::remove_var(&var);
    let err = samgate::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keys.pseudonym_master") && err.contains(&var),
        "{err}"
    );
}
