//! Crash safety (issue 9): `kill -9` of a real `samgate serve` process under
//! async load, then a restart. Every acknowledged (202) exchange is
//! delivered; a second delivery only comes from the crash window and is
//! counted and reported.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::harness::{
    consent_args, count, free_port, fresh_db_url, now, Client, Recipient, Reply, ALVA,
};

/// Edits the `samgate init` config in `dir` for a child `samgate serve`: a
/// free port and these text replacements; the file and the address.
fn serve_config(
    dir: &std::path::Path,
    replacements: &[(&str, String)],
) -> (std::path::PathBuf, std::net::SocketAddr) {
    let port = free_port();
    let path = dir.join("samgate.toml");
    let mut text = std::fs::read_to_string(&path).unwrap().replace(
        "listen = \"127.0.0.1:8443\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    std::fs::write(&path, text).unwrap();
    (path, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Signs `args` now and records the consent through `intake` (a child's).
async fn record_on(intake: &Client, args: &samgate::cli::ConsentSignArgs) {
    let token = samgate::consent::cli::sign_consent(args, now()).unwrap();
    let rsp = intake.post("/v1/consents", &json!({"token": token})).await;
    assert_eq!(rsp.status, 201, "{}", rsp.text);
}

fn serve(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(c: &Client) {
    for _ in 0..200 {
        if let Ok(r) = c.try_get("/healthz").await {
            if r.status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

both_backends!(
    kill_9_under_async_load_loses_no_acknowledged_exchange,
    |db| async move {
        let dir = tempfile::tempdir().unwrap();
        samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
        let url = fresh_db_url(db, dir.path()).await;
        let fk = Recipient::start(dir.path(), "fk", "127.0.0.1:0".parse().unwrap()).await;
        fk.set_default_reply(Reply::delayed(Duration::from_millis(20)));
        let (path, addr) = serve_config(
            dir.path(),
            &[
                (
                    "url = \"sqlite://data/samgate.db\"",
                    format!("url = \"{url}\""),
                ),
                (
                    "https://127.0.0.1:9101/inbox",
                    format!("https://127.0.0.1:{}/inbox", fk.addr.port()),
                ),
                (
                    "rate_limit_per_party = 2000",
                    "rate_limit_per_party = 0".into(),
                ),
                ("timeout = \"10s\"", "timeout = \"2s\"".into()),
                (
                    "backoff_initial = \"1s\"",
                    "backoff_initial = \"50ms\"".into(),
                ),
                ("backoff_max = \"5m\"", "backoff_max = \"500ms\"".into()),
            ],
        );
        let af = Client::of(addr, dir.path(), "af");
        let intake = Client::of(addr, dir.path(), "sfk-kalmar");
        let mut child = serve(&path);
        wait_healthy(&af).await;
        let mut args = consent_args_for(dir.path());
        args.subject = ALVA.into();
        record_on(&intake, &args).await;

        // Async load from 4 clients; kill -9 while it runs.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = af.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let m = json!({"to": "fk", "type": "attendance-report", "purpose": "samordnad-rehabilitering",
                    "subject": ALVA, "delivery": "async",
                    "payload": {"period": {"start": "2026-10-01", "end": "2026-10-31"}, "attended_hours": 20}});
                let r = c.http.post(format!("{}/v1/exchanges", c.base)).json(&m).send().await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        let _ = tx.send(v["exchange_id"].as_str().unwrap().to_owned());
                    }
                    _ => break,
                }
            }
        }));
        }
        drop(tx);
        let mut acknowledged = Vec::new();
        while acknowledged.len() < 150 {
            match rx.recv().await {
                Some(id) => acknowledged.push(id),
                None => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            let _ = t.await;
        }
        while let Ok(id) = rx.try_recv() {
            acknowledged.push(id);
        }
        assert!(acknowledged.len() >= 150);

        let mut child = serve(&path);
        wait_healthy(&af).await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        // Claims of the killed instance are retried once their lease
        // (delivery timeout + 15 s) runs out.
        for _ in 0..800 {
            seen.clear();
            for r in fk.received() {
                *seen.entry(r.exchange_id()).or_default() += 1;
            }
            if acknowledged.iter().all(|id| seen.contains_key(id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let missing = acknowledged
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .count();
        assert_eq!(missing, 0, "acknowledged exchanges were lost");
        let duplicates: usize = seen.values().map(|n| n - 1).sum();
        eprintln!("crash test ({db:?}): {} acknowledged, {} delivered, {duplicates} duplicate deliveries from the crash window", acknowledged.len(), seen.len());
        // A duplicate needs a delivery in flight at the kill: at most one claim batch per worker.
        assert!(duplicates <= 32, "{duplicates} duplicates");

        // Every exchange the log says was forwarded is delivered, and the log has no gap.
        let cfg = samgate::config::Config::load(&path).unwrap();
        let store = samgate::store::Store::open(&cfg.storage).await.unwrap();
        for _ in 0..800 {
            let pending = count(store.pool(), "SELECT COUNT(*) FROM outbox").await;
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let forwarded = count(
            store.pool(),
            "SELECT COUNT(*) FROM audit_records WHERE action = 'exchange-forwarded'",
        )
        .await;
        let delivered = count(
            store.pool(),
            "SELECT COUNT(*) FROM exchanges WHERE status = 'delivered'",
        )
        .await;
        assert!(forwarded as usize >= acknowledged.len());
        assert_eq!(
            forwarded, delivered,
            "a forwarded exchange was not delivered"
        );
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit_records ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert!(
            seqs.iter().enumerate().all(|(i, s)| *s == i as i64 + 1),
            "gap in seq"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_samgate"))
            .args(["audit", "verify", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "audit verify failed after the crash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("verified "));
        child.kill().unwrap();
        let _ = child.wait();
    }
);

/// Alva's consent for af and fk: attendance and case, 30 days.
fn consent_args_for(dir: &std::path::Path) -> samgate::cli::ConsentSignArgs {
    let mut args = consent_args(dir, ALVA, &["af", "fk"], &["attendance", "case"]);
    args.purposes = vec!["samordnad-rehabilitering".into()];
    args.days = 30;
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_signs_a_final_tree_head() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let (path, addr) = serve_config(
        dir.path(),
        &[(
            "checkpoint_interval = \"1s\"",
            "checkpoint_interval = \"1h\"".into(),
        )],
    );
    let intake = Client::of(addr, dir.path(), "sfk-kalmar");
    let mut child = serve(&path);
    wait_healthy(&intake).await;
    record_on(&intake, &consent_args_for(dir.path())).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "serve did not exit 0 on SIGTERM");
    // The final head covers the consent-recorded record even though the
    // checkpoint interval (1 h) never elapsed.
    let cfg = samgate::config::Config::load(&path).unwrap();
    let store = samgate::store::Store::open(&cfg.storage).await.unwrap();
    let size = count(store.pool(), "SELECT MAX(tree_size) FROM tree_heads").await;
    let records = count(store.pool(), "SELECT COUNT(*) FROM audit_records").await;
    assert_eq!(size, records);
    assert!(records >= 1);
}
