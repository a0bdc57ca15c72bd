//! The operator kit (issue #19): `samgate check`, reload, vault rotation,
//! metrics, and the personnummer kept out of argv.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{
    consent_args, count, free_port, now, record_consent, Client, Db, Reply, TestGateway,
    ALL_PARTIES as ALL, ALVA,
};

const CATS: &[&str] = &["case", "identity", "attendance", "employment", "health"];

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_samgate"))
}

/// Alva's attendance report (in a dashed spelling) with this delivery.
fn attendance(delivery: &str) -> Value {
    let mut m = crate::harness::attendance("20020314-9828");
    m["delivery"] = json!(delivery);
    m
}

/// The index of a party in `[[party]]` (as `check` names it).
fn party_index(gw: &TestGateway, id: &str) -> usize {
    gw.config
        .parties
        .iter()
        .position(|p| p.id.as_str() == id)
        .unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn without_attendance_routes(t: &mut toml::Table) {
    let routes = t["route"].as_array_mut().unwrap();
    routes.retain(|r| r["type"].as_str() != Some("attendance-report"));
}

/// `samgate check --config <config>` (the text form).
fn check_text(config: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    bin()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn check_json(config: &Path) -> (i32, Value) {
    let out = bin()
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn findings(v: &Value) -> Vec<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap().to_owned(),
                f["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_fresh_init_with_its_recipients_up() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let config = gw.write_config("check.toml", |_| {});
    let (code, v) = check_json(&config);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ok"], true);
    // Every recipient endpoint was probed and its SPKI reported.
    let probed: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["key"].as_str().unwrap().ends_with(".endpoint"))
        .collect();
    assert_eq!(probed.len(), gw.recipients.len());
    assert!(probed
        .iter()
        .all(|c| c["detail"].as_str().unwrap().contains("SPKI SHA-256")));
    // Text form: one line per check and a summary, exit 0.
    let out = check_text(&config);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().last().unwrap().ends_with(" 0 findings"),
        "{text}"
    );
    assert!(!text.contains("FAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_an_uninitialised_database_does_not_create_it() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let db = dir.path().join("data/samgate.db");
    let cfg = dir.path().join("samgate.toml");
    let (_, v) = check_json(&cfg);
    assert!(!db.exists(), "check created the database");
    let storage: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["key"] == "storage")
        .collect();
    assert_eq!(storage.len(), 1, "{v:#}");
    assert_eq!(storage[0]["status"], "ok", "{v:#}");
    // No recipient listens on a fresh init: each endpoint is a finding.
    assert!(
        findings(&v).iter().all(|(k, _)| k.ends_with(".endpoint")),
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_an_expired_certificate_an_open_key_and_a_dead_endpoint() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    // An expired certificate for the gateway's outbound client identity.
    let mut params = rcgen::CertificateParams::new(vec!["expired.example".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(gw.path("pki/expired.pem"), cert.pem()).unwrap();
    // A key readable by everyone.
    set_mode(&gw.path("keys/vault.key"), 0o644);
    // A dead endpoint: a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let config = gw.write_config("broken.toml", |t| {
        t["server"]["certificate"] = toml::Value::String("pki/expired.pem".into());
        for p in t["party"].as_array_mut().unwrap() {
            if p["id"].as_str() == Some("fk") {
                p["endpoint"] = toml::Value::String(format!("https://127.0.0.1:{dead_port}/inbox"));
            }
            // An endpoint whose certificate is not the pinned one (§10).
            if p["id"].as_str() == Some("af") {
                p["endpoint_certificate_sha256"] = toml::Value::String("ab".repeat(32));
            }
        }
    });
    let (code, v) = check_json(&config);
    assert_eq!(code, 1, "{v:#}");
    let f = findings(&v);
    let has = |key: &str, text: &str| f.iter().any(|(k, d)| k == key && d.contains(text));
    assert!(has("server.certificate", "expired"), "{f:#?}");
    assert!(has("keys.vault", "mode 0644"), "{f:#?}");
    let fk = party_index(&gw, "fk");
    assert!(
        has(&format!("party[{fk}].endpoint"), "cannot connect"),
        "{f:#?}"
    );
    let af = party_index(&gw, "af");
    assert!(
        has(&format!("party[{af}].endpoint"), "not the pinned"),
        "{f:#?}"
    );
    // The text form has one FAIL line per finding.
    let out = check_text(&config);
    let text = String::from_utf8(out.stdout).unwrap();
    set_mode(&gw.path("keys/vault.key"), 0o600);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("FAIL")).count(),
        f.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_2_on_a_config_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samgate.toml");
    std::fs::write(&path, "[server]\nlisten = 1\n").unwrap();
    let out = check_text(&path);
    assert_eq!(out.status.code(), Some(2));
    let missing = bin()
        .args(["check", "--config"])
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_route_on_the_same_connection_and_refuses_a_broken_file() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    record_consent(&gw, ALVA, ALL, CATS).await;
    let af = gw.client("af");
    let state = gw.state().clone();

    let without = gw.write_config("without.toml", without_attendance_routes);
    let r = samgate::reload::reload(&state, &without).unwrap();
    assert_eq!(r.generation, 1);
    let rsp = af.post_exchange(&attendance("sync")).await;
    assert_eq!(
        rsp.problem_code(),
        (403, "route_not_allowed"),
        "{}",
        rsp.text
    );

    let full = gw.write_config("full.toml", |_| {});
    samgate::reload::reload(&state, &full).unwrap();
    let rsp = af.post_exchange(&attendance("sync")).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);

    // A broken file: refused with its reasons, the running routes stay.
    let broken = gw.write_config("broken.toml", |t| {
        t["route"].as_array_mut().unwrap()[0]["to"] =
            toml::Value::Array(vec![toml::Value::String("nobody".into())]);
    });
    let e = samgate::reload::reload(&state, &broken).unwrap_err();
    assert!(
        e.reasons
            .iter()
            .any(|r| r.starts_with("route[0].to") && r.contains("nobody")),
        "{e}"
    );
    let garbage = gw.path("garbage.toml");
    std::fs::write(&garbage, "this is not toml [").unwrap();
    assert!(samgate::reload::reload(&state, &garbage).is_err());
    assert_eq!(state.current_live().generation, 2);
    let rsp = af.post_exchange(&attendance("sync")).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);

    let metrics = af.get("/metrics").await.text;
    assert!(
        metrics.contains("samgate_config_reloads_total{result=\"success\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("samgate_config_reloads_total{result=\"refused\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_party_with_its_pseudonym_domain() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let state = gw.state().clone();
    // Start without kommun-kalmar's routes and party, then add them back.
    let without = gw.write_config("without.toml", |t| {
        let parties = t["party"].as_array_mut().unwrap();
        parties.retain(|p| p["id"].as_str() != Some("kommun-kalmar"));
        let routes = t["route"].as_array_mut().unwrap();
        routes.retain(|r| {
            let names = |k: &str| {
                r[k].as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v.as_str() == Some("kommun-kalmar"))
            };
            !names("from") && !names("to")
        });
    });
    samgate::reload::reload(&state, &without).unwrap();
    // An unpinned certificate is closed right after the handshake (DESIGN §10).
    assert!(gw
        .client("kommun-kalmar")
        .try_get("/v1/keys")
        .await
        .is_err());
    let full = gw.write_config("full.toml", |_| {});
    samgate::reload::reload(&state, &full).unwrap();
    let rsp = gw.client("kommun-kalmar").get("/v1/keys").await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_samgate_serve_reloads_its_configuration() {
    // The recipients and files of a harness gateway, served by a child
    // process on its own database.
    let mut gw = TestGateway::spawn(Db::Sqlite).await;
    gw.stop().await;
    let port = free_port();
    let db = format!("sqlite://{}", gw.path("data/child.db").display());
    let config = gw.write_config("child.toml", |t| {
        t["server"]["listen"] = toml::Value::String(format!("127.0.0.1:{port}"));
        t["storage"]["url"] = toml::Value::String(db.clone());
        without_attendance_routes(t);
    });
    let child = Child(
        bin()
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = |party: &str| Client::of(addr, gw.dir.path(), party);
    let af = client("af");
    let mut up = false;
    for _ in 0..200 {
        if af.try_get("/healthz").await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "samgate serve did not come up");
    let token =
        samgate::consent::cli::sign_consent(&consent_args(&gw, ALVA, ALL, CATS), now()).unwrap();
    let rsp = client("sfk-kalmar")
        .post("/v1/consents", &json!({"token": token}))
        .await;
    assert_eq!(rsp.status, 201, "{}", rsp.text);
    let rsp = af.post_exchange(&attendance("sync")).await;
    assert_eq!(rsp.problem(), "route_not_allowed", "{}", rsp.text);

    // Add the routes back and send SIGHUP; the same client (and pooled
    // connection) then gets through.
    gw.write_config("child.toml", |t| {
        t["server"]["listen"] = toml::Value::String(format!("127.0.0.1:{port}"));
        t["storage"]["url"] = toml::Value::String(db.clone());
    });
    let pid = child.0.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut reloaded = false;
    for _ in 0..200 {
        let m = af.get("/metrics").await.text;
        if m.contains("samgate_config_reloads_total{result=\"success\"} 1") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "no reload was counted after SIGHUP");
    let rsp = af.post_exchange(&attendance("sync")).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_outbox_deliveries_checkpoints_and_certificates() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    record_consent(&gw, ALVA, ALL, CATS).await;
    let af = gw.client("af");
    let rsp = af.post_exchange(&attendance("async")).await;
    assert_eq!(rsp.status, 202, "{}", rsp.text);
    let id = rsp.exchange_id();
    let s = af
        .wait_for_exchange(&id, |s| s["status"] == "delivered")
        .await;
    let delivered = s["status"] == "delivered";
    assert!(delivered);
    // A signed tree head exists once the checkpoint interval has passed.
    let _ = gw.state().audit.sign_head().await;
    let m = af.get("/metrics").await.text;
    for name in [
        "samgate_outbox_depth 0",
        "samgate_outbox_oldest_age_seconds 0",
        "samgate_delivery_duration_seconds_count{recipient=\"fk\",delivery=\"async\"}",
        "samgate_audit_tree_size ",
        "samgate_audit_checkpoint_age_seconds ",
        "samgate_certificate_expiry_seconds{file=\"server.certificate\"}",
        "samgate_certificate_expiry_seconds{file=\"server.outbound_certificate\"}",
        concat!(
            "samgate_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
    ] {
        assert!(m.contains(name), "{name} missing in\n{m}");
    }
    assert!(!m.contains("=\"\""), "an empty label value in\n{m}");

    // A failing recipient is counted per recipient.
    gw.recipient("fk").set_default_reply(Reply::status(503));
    let rsp = af.post_exchange(&attendance("sync")).await;
    assert_eq!(rsp.status, 502, "{}", rsp.text);
    let m = af.get("/metrics").await.text;
    assert!(
        m.contains(
            "samgate_delivery_failures_total{recipient=\"fk\",delivery=\"sync\",reason=\"status\"}"
        ),
        "{m}"
    );
}

both_backends!(
    rotate_vault_reseals_every_value_and_all_still_open,
    |db| async move {
        let mut gw = TestGateway::spawn(db).await;
        let consent = record_consent(&gw, ALVA, ALL, CATS).await;
        let af = gw.client("af");
        let idem = af
            .post_exchange_with(&attendance("sync"), &[("Idempotency-Key", "rot-1")])
            .await;
        assert_eq!(idem.status, 200, "{}", idem.text);
        // An outbox body that stays (the recipient refuses for now).
        gw.recipient("fk").set_default_reply(Reply::status(503));
        let queued = af.post_exchange(&attendance("async")).await;
        assert_eq!(queued.status, 202, "{}", queued.text);
        let revoked = record_consent(&gw, ALVA, &["fk", "af"], &["attendance"]).await;
        let rsp = gw
            .revoke(&revoked, &json!({"reason": "återkallat muntligen"}))
            .await;
        assert!(rsp.status < 300, "{}", rsp.text);
        gw.stop().await;

        // A new first key; the old one stays in the list to open.
        let new_key = gw.path("keys/vault-2.key");
        samgate::keys::write_secret_file(&new_key, &rand::random::<[u8; 32]>()).unwrap();
        let mut config = gw.config.clone();
        let old = config.keys.vault.clone();
        config.keys.vault = samgate::config::SecretSource::File(new_key.clone());
        config.keys.vault_previous = vec![old];
        let r = samgate::rotate::rotate_config(&config).await.unwrap();
        assert_eq!(r.failed(), 0, "{r:?}");
        assert!(r.vault.resealed >= 1, "{r:?}");
        assert!(r.consent_tokens.resealed >= 2, "{r:?}");
        assert_eq!(r.revocation_reasons.resealed, 1, "{r:?}");
        assert_eq!(r.outbox_bodies.resealed, 1, "{r:?}");
        assert!(r.idempotency_responses.resealed >= 1, "{r:?}");
        let again = samgate::rotate::rotate_config(&config).await.unwrap();
        assert!(
            again
                .kinds()
                .iter()
                .all(|(_, c)| c.resealed == 0 && c.failed == 0),
            "{again:?}"
        );

        // With the new key alone, every value opens.
        let mut only_new = config.clone();
        only_new.keys.vault_previous.clear();
        let crypto = samgate::crypto::Crypto::load(&only_new).unwrap();
        let store = samgate::store::Store::connect(&only_new.storage)
            .await
            .unwrap();
        let pool = store.pool();
        type VaultRow = (String, String, String, Vec<u8>, Vec<u8>);
        let vault: Vec<VaultRow> =
            sqlx::query_as("SELECT domain, pseudonym, key_id, nonce, ciphertext FROM vault")
                .fetch_all(pool)
                .await
                .unwrap();
        assert!(!vault.is_empty());
        for (d, p, k, n, c) in vault {
            let s = samgate::subject::vault::Sealed {
                key_id: k,
                nonce: n.try_into().unwrap(),
                ciphertext: c,
            };
            let aad = [d.as_bytes(), b"\0", p.as_bytes()].concat();
            let plain = crypto.vault.open_bytes(&aad, &s).unwrap();
            assert_eq!(&plain[..], ALVA.as_bytes());
        }
        let tokens: Vec<(String, String, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT id, token_key_id, token_nonce, token_sealed FROM consents")
                .fetch_all(pool)
                .await
                .unwrap();
        assert!(tokens.iter().any(|t| t.0 == consent));
        for (id, k, n, c) in tokens {
            let s = samgate::subject::vault::Sealed {
                key_id: k,
                nonce: n.try_into().unwrap(),
                ciphertext: c,
            };
            let plain = crypto
                .vault
                .open_bytes(&samgate::consent::api::token_aad(&id), &s)
                .unwrap();
            assert_eq!(plain.iter().filter(|b| **b == b'.').count(), 2);
        }
        let reason: String =
            sqlx::query_scalar("SELECT revocation_reason FROM consents WHERE id = $1")
                .bind(revoked.clone())
                .fetch_one(pool)
                .await
                .unwrap();
        let aad = [b"revocation-reason\0".as_slice(), revoked.as_bytes()].concat();
        assert_eq!(
            crypto.open_text(&aad, &reason).unwrap(),
            "återkallat muntligen"
        );
        store.close().await;

        // The gateway on the new key alone: the idempotent response replays,
        // the queued body is delivered.
        gw.recipient("fk").set_default_reply(Reply::default());
        let state = samgate::state::AppState::build(only_new).await.unwrap();
        let g = samgate::http::server::Gateway::start(state).await.unwrap();
        gw.gw = Some(g);
        let af = gw.client("af");
        let replay = af
            .post_exchange_with(&attendance("sync"), &[("Idempotency-Key", "rot-1")])
            .await;
        assert_eq!(replay.status, 200, "{}", replay.text);
        assert_eq!(replay.json()["exchange_id"], idem.json()["exchange_id"]);
        let id = queued.exchange_id();
        gw.state().outbox_notify.notify_one();
        let s = af
            .wait_for_exchange(&id, |s| s["status"] == "delivered")
            .await;
        let delivered = s["status"] == "delivered";
        assert!(delivered, "the re-sealed outbox body was not delivered");
        gw.stop().await;
    }
);

#[test]
fn consent_sign_refuses_subject_in_argv_and_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let key = dir.path().join("keys/issuer-sfk-kalmar-intake.pem");
    let common = |c: &mut std::process::Command| {
        c.args(["consent", "sign", "--key"]).arg(&key).args([
            "--issuer",
            "sfk-kalmar-intake",
            "--key-id",
            "2026-1",
            "--parties",
            "fk",
            "--purposes",
            "samordnad-rehabilitering",
            "--categories",
            "attendance",
        ]);
    };
    let mut c = bin();
    common(&mut c);
    let out = c.args(["--subject", "020314-9828"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("process list") && err.contains("--subject-file"),
        "{err}"
    );
    assert!(!err.contains("020314"), "{err}");

    let file = dir.path().join("subject.txt");
    std::fs::write(&file, "20020314-9828\n").unwrap();
    let mut c = bin();
    common(&mut c);
    let out = c.arg("--subject-file").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .split('.')
            .count(),
        3
    );

    std::fs::write(&file, "not a number\n").unwrap();
    let mut c = bin();
    common(&mut c);
    let out = c.arg("--subject-file").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8(out.stderr)
        .unwrap()
        .contains("not a number"));
}

#[test]
fn audit_verify_with_a_mistyped_database_path_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let cfg = dir.path().join("samgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut t: toml::Table = toml::from_str(&text).unwrap();
    t["storage"]["url"] = toml::Value::String("sqlite://data/typo/samgate.db".into());
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let out = bin()
        .args(["audit", "verify", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("data/typo").exists());
    assert!(!dir.path().join("data/typo/samgate.db").exists());
}

#[test]
fn init_writes_the_config_0600_and_storage_url_takes_env() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let cfg = dir.path().join("samgate.toml");
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let text = std::fs::read_to_string(&cfg).unwrap();
    let var = "SAMGATE_TEST_OPS_STORAGE_URL";
    let mut t: toml::Table = toml::from_str(&text).unwrap();
    t["storage"]["url"] = toml::Value::String(format!("env:{var}"));
    let text = toml::to_string(&t).unwrap();
    // Unset: a config issue naming the key and the variable.
    let err = samgate::config::Config::from_toml_str(&text, dir.path(), &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("storage.url") && msg.contains(var), "{msg}");
    // Set: the URL is taken from it.
    let pg = "postgres://postgres@127.0.0.1:5432/test";
    let c = with_var(var, pg, || {
        samgate::config::Config::from_toml_str(&text, dir.path(), &cfg)
    });
    assert_eq!(c.unwrap().storage.url, pg);
}

/// Runs `f` with an environment variable set (only this test uses it).
fn with_var<T>(var: &str, value: &str, f: impl FnOnce() -> T) -> T {
    std::env::set_var(var, value);
    let out = f();
    std::env::remove_var(var);
    out
}

#[test]
fn vault_keys_take_a_list_and_a_single_string() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let cfg = dir.path().join("samgate.toml");
    let single = samgate::config::Config::load(&cfg).unwrap();
    assert!(single.keys.vault_previous.is_empty());
    samgate::keys::write_secret_file(&dir.path().join("keys/vault-2.key"), &[7; 32]).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut t: toml::Table = toml::from_str(&text).unwrap();
    t["keys"]["vault"] = toml::Value::Array(vec![
        toml::Value::String("keys/vault-2.key".into()),
        toml::Value::String("keys/vault.key".into()),
    ]);
    let c = samgate::config::Config::from_toml_str(&toml::to_string(&t).unwrap(), dir.path(), &cfg)
        .unwrap();
    assert_eq!(
        c.keys.vault,
        samgate::config::SecretSource::File(dir.path().join("keys/vault-2.key"))
    );
    assert_eq!(c.keys.vault_previous.len(), 1);
    let crypto = samgate::crypto::Crypto::load(&c).unwrap();
    assert_eq!(crypto.vault.previous_key_ids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_in_flight_finishes_on_the_configuration_it_started_with() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    record_consent(&gw, ALVA, ALL, CATS).await;
    gw.recipient("fk")
        .set_default_reply(Reply::delayed(Duration::from_millis(500)));
    let af = gw.client("af");
    let inflight = tokio::spawn(async move { af.post_exchange(&attendance("sync")).await });
    // The exchange row is committed before delivery: from then on the
    // request has decided its route.
    let mut started = false;
    for _ in 0..400 {
        let n = count(
            gw.pool(),
            "SELECT COUNT(*) FROM exchanges WHERE msg_type = 'attendance-report'",
        )
        .await;
        if n > 0 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started);
    let without = gw.write_config("without.toml", without_attendance_routes);
    samgate::reload::reload(gw.state(), &without).unwrap();
    let rsp = inflight.await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text);
    assert_eq!(rsp.json()["status"], "delivered");
    // The next request is decided on the new routes.
    let rsp = gw.client("af").post_exchange(&attendance("sync")).await;
    assert_eq!(rsp.problem(), "route_not_allowed", "{}", rsp.text);
}

/// A request is authenticated and authorised on one configuration: a reload
/// that lands while its body is still arriving must not pair the principal
/// of the old configuration (a certificate it pinned) with the routes of
/// the new one (where that certificate is no longer pinned). Found in the
/// review of the operator features: the middleware and the handler used to
/// read the snapshot separately.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_mixes_the_principal_of_one_configuration_with_the_routes_of_another() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::spawn(Db::Sqlite).await;
    record_consent(&gw, ALVA, ALL, CATS).await;
    // Generation 1: af may not send attendance reports.
    let without = gw.write_config("without.toml", without_attendance_routes);
    samgate::reload::reload(gw.state(), &without).unwrap();
    // Generation 2: the route is back, but af's old certificate is revoked
    // (af is re-pinned to another certificate).
    let repinned = gw.write_config("repinned.toml", |t| {
        for p in t["party"].as_array_mut().unwrap() {
            if p["id"].as_str() == Some("af") {
                p["certificate_sha256"] = toml::Value::String("ab".repeat(32));
            }
        }
    });

    let mut tls = samgate::tls::client_config(
        &gw.path("pki/ca.pem"),
        &gw.path("pki/af.pem"),
        &gw.path("pki/af.key"),
    )
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = connector.connect(name, tcp).await.unwrap();
    let body = serde_json::to_vec(&attendance("sync")).unwrap();
    let head = format!(
        "POST /v1/exchanges HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    // Let the gateway read the head and authenticate (generation 1), then
    // reload while the body has not arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    samgate::reload::reload(gw.state(), &repinned).unwrap();
    conn.write_all(&body).await.unwrap();
    conn.flush().await.unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    // Decided wholly on generation 1 (403 route_not_allowed) or, on a slow
    // machine that authenticated after the reload, wholly on generation 2
    // (401): never accepted.
    assert!(
        (status == "403" && text.contains("route_not_allowed"))
            || (status == "401" && text.contains("unauthenticated")),
        "{text}"
    );
}
