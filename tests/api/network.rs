//! A hostile network (DESIGN §10, issue #14): slow and many clients, an
//! unpinned certificate, the connection cap, a client that leaves during a
//! sync exchange, a slow recipient, and a recipient endpoint that serves the
//! wrong certificate. Real TLS, real recipients on loopback; no latency
//! assertions (the figures are in docs/security.md from a measured run).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::both_backends;
use crate::harness::{
    record_consent, Db, Identity, Reply, TestGateway, ALL_PARTIES as PARTIES, ALVA,
};

const CATEGORIES: &[&str] = &["case", "identity", "attendance", "free-text"];

/// Alva's attendance report to `to`, sync.
fn attendance(to: &str) -> Value {
    let mut m = crate::harness::attendance(ALVA);
    m["to"] = json!(to);
    m
}

/// A gateway (SQLite) with these header and idle timeouts, in seconds.
async fn with_timeouts(header_secs: u64, idle_secs: u64) -> TestGateway {
    TestGateway::spawn_with(Db::Sqlite, |c| {
        c.server.header_timeout = Duration::from_secs(header_secs);
        c.server.idle_timeout = Duration::from_secs(idle_secs);
    })
    .await
}

/// A TLS connection to the gateway presenting `cert`/`key` (HTTP/1.1).
async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> std::io::Result<TlsStream<TcpStream>> {
    let cfg = samgate::tls::client_config(ca, cert, key).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

async fn party_connect(gw: &TestGateway, party: &str) -> TlsStream<TcpStream> {
    tls_connect(
        gw.addr(),
        &gw.path("pki/ca.pem"),
        &gw.path(&format!("pki/{party}.pem")),
        &gw.path(&format!("pki/{party}.key")),
    )
    .await
    .unwrap()
}

/// Reads until the peer closes; the bytes read. Gives up (returning None)
/// after `limit`, which is only a guard against a hanging test.
async fn read_to_close(s: &mut TlsStream<TcpStream>, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(out)
}

/// One plain request on an open connection; the status line's code.
async fn get_on(s: &mut TlsStream<TcpStream>, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert!(n > 0, "connection closed before a response head");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let len: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    text[9..12].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_connections_are_closed_after_header_timeout_while_a_party_is_served() {
    let gw = TestGateway::spawn_with(Db::Sqlite, |c| {
        c.server.header_timeout = Duration::from_secs(1);
    })
    .await;
    // 300 connections with a pinned certificate: most trickle a request head
    // one byte every 200 ms (it would take minutes to complete), every tenth
    // sends nothing at all after the handshake.
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..300 {
        let mut s = party_connect(&gw, "af").await;
        slow.spawn(async move {
            let head = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let mut buf = [0u8; 256];
            let mut sent = 0;
            // The guard only keeps a broken gateway from hanging the test.
            let guard = tokio::time::sleep(Duration::from_secs(60));
            tokio::pin!(guard);
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => {
                        // Closed (EOF or reset), never answered.
                        return matches!(r, Ok(0) | Err(_));
                    }
                    _ = tokio::time::sleep(Duration::from_millis(200)), if i % 10 != 0 && sent < head.len() => {
                        if s.write_all(&head[sent..sent + 1]).await.is_err() {
                            return true;
                        }
                        let _ = s.flush().await;
                        sent += 1;
                    }
                    _ = &mut guard => return false,
                }
            }
        });
    }
    // Meanwhile a normal party keeps being served.
    let fk = gw.client("fk");
    let mut served = 0;
    while slow.len() == 300 && served < 500 {
        let rsp = fk.get("/healthz").await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served > 0);
    let mut closed = 0;
    while let Some(r) = slow.join_next().await {
        assert!(r.unwrap(), "a slow connection was answered or never closed");
        closed += 1;
    }
    assert_eq!(closed, 300);
    // And the gateway still serves after the attack.
    assert_eq!(fk.get("/healthz").await.status, 200);
    let metrics = fk.get("/metrics").await.text;
    assert!(
        metrics.contains("samgate_connections_closed_total{reason=\"header_timeout\"}"),
        "no header_timeout closures counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_lives_until_idle_timeout_not_header_timeout() {
    let gw = with_timeouts(1, 3).await;
    let mut s = party_connect(&gw, "fk").await;
    assert_eq!(get_on(&mut s, "/healthz").await, 200);
    // Longer than header_timeout, shorter than idle_timeout: still open.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(get_on(&mut s, "/healthz").await, 200);
    // Then nothing: closed once idle_timeout has passed.
    let rest = read_to_close(&mut s, Duration::from_secs(30)).await;
    assert_eq!(
        rest,
        Some(Vec::new()),
        "the idle connection was not closed quietly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpinned_certificate_is_closed_before_a_request_is_read() {
    // Timeouts far beyond the test's guard: only the pin check can close.
    let gw = with_timeouts(300, 300).await;
    // Same CA, same name as a real party, but not pinned.
    let other = Identity::issue(&gw.ca(), "fk");
    let ca = gw.path("pki/ca.pem");
    let mut s = tls_connect(gw.addr(), &ca, &other.cert, &other.key)
        .await
        .unwrap();
    // The request may or may not be written before the close arrives; it
    // is never answered.
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let answer = read_to_close(&mut s, Duration::from_secs(30)).await;
    assert_eq!(
        answer.map(|a| a.is_empty()),
        Some(true),
        "an unpinned certificate got an HTTP answer or the connection stayed open"
    );
    // Without writing anything: closed at once, long before any timeout.
    let mut s = tls_connect(gw.addr(), &ca, &other.cert, &other.key)
        .await
        .unwrap();
    assert_eq!(
        read_to_close(&mut s, Duration::from_secs(30)).await,
        Some(Vec::new())
    );
    let metrics = gw.client("fk").get("/metrics").await.text;
    assert!(metrics.contains("samgate_connections_closed_total{reason=\"unpinned\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_connections_wait_and_nothing_crashes() {
    let gw = TestGateway::spawn_with(Db::Sqlite, |c| {
        c.server.max_connections = 4;
        c.server.header_timeout = Duration::from_secs(60);
        c.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = party_connect(&gw, "fk").await;
        assert_eq!(get_on(&mut s, "/healthz").await, 200);
        held.push(s);
    }
    // The fifth waits in the listen backlog: its handshake does not finish
    // while four are held.
    let addr = gw.addr();
    let (ca, cert, key) = (
        gw.path("pki/ca.pem"),
        gw.path("pki/af.pem"),
        gw.path("pki/af.key"),
    );
    let fifth = tokio::spawn(async move {
        let mut s = tls_connect(addr, &ca, &cert, &key).await.unwrap();
        get_on(&mut s, "/healthz").await
    });
    // More than the cap at once: none of these crash anything.
    let mut extra = Vec::new();
    for _ in 0..20 {
        extra.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fifth.is_finished(), "a fifth connection was served");
    drop(extra);
    // Freeing one slot lets it through.
    held.pop();
    assert_eq!(fifth.await.unwrap(), 200);
    for s in held.iter_mut() {
        assert_eq!(get_on(s, "/healthz").await, 200);
    }
}

both_backends!(
    a_sync_exchange_finishes_when_its_client_leaves,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        record_consent(&gw, ALVA, PARTIES, CATEGORIES).await;
        gw.recipient("fk")
            .set_default_reply(Reply::delayed(Duration::from_secs(5)));
        // A client that gives up after 1 s of a 5 s delivery.
        let impatient = {
            let tls = samgate::tls::client_config(
                &gw.path("pki/ca.pem"),
                &gw.path("pki/af.pem"),
                &gw.path("pki/af.key"),
            )
            .unwrap();
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap()
        };
        let msg = attendance("fk");
        let gone = impatient
            .post(format!(
                "https://127.0.0.1:{}/v1/exchanges",
                gw.addr().port()
            ))
            .header("idempotency-key", "leaver-1")
            .json(&msg)
            .send()
            .await;
        assert!(
            gone.is_err_and(|e| e.is_timeout()),
            "the client did not leave"
        );
        drop(impatient);
        // The retry with the key: in progress (202 forwarded) until the
        // delivery ends, then the final result.
        let af = gw.client("af");
        let mut last = None;
        for _ in 0..200 {
            let r = af
                .post_exchange_with(&msg, &[("Idempotency-Key", "leaver-1")])
                .await;
            if r.status == 200 {
                last = Some(r);
                break;
            }
            // 409: the key is claimed but the decision not yet committed
            // (a loaded machine); 202: committed, delivery in progress.
            match r.status {
                409 => assert_eq!(r.problem(), "idempotency_conflict"),
                202 => assert_eq!(r.json()["status"], "forwarded"),
                other => panic!("unexpected {other}: {}", r.text),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = last.expect("the exchange never finished");
        let body = last.json();
        assert_eq!(body["status"], "delivered");
        assert!(body["forwarded"].is_array(), "not the full result: {body}");
        assert_eq!(
            last.headers
                .get("idempotent-replay")
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );
        let id = body["exchange_id"].as_str().unwrap().to_owned();
        assert_eq!(gw.recipient("fk").received().len(), 1);
        let pool = gw.pool();
        let actions: Vec<String> = sqlx::query_scalar(
            "SELECT action FROM audit_records WHERE exchange_id = $1 ORDER BY seq",
        )
        .bind(id.clone())
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(actions, ["exchange-forwarded", "exchange-delivered"]);
        let status = af.exchange_status(&id).await;
        assert_eq!(status["status"], "delivered");
    }
);

both_backends!(
    a_slow_recipient_does_not_delay_another_recipients_async_messages,
    |db| async move {
        let gw = TestGateway::spawn_with(db, |c| {
            c.delivery.timeout = Duration::from_secs(60);
            c.delivery.workers = 4;
            c.delivery.per_recipient = 2;
        })
        .await;
        record_consent(&gw, ALVA, PARTIES, CATEGORIES).await;
        // fk answers after 20 s; af at once.
        gw.recipient("fk")
            .set_default_reply(Reply::delayed(Duration::from_secs(20)));
        let kommun = gw.client("kommun-kalmar");
        let send = |to: &'static str| {
            let mut m = attendance(to);
            m["delivery"] = json!("async");
            let kommun = kommun.clone();
            async move {
                let r = kommun.post_exchange(&m).await;
                assert_eq!(r.status, 202, "{}", r.text);
                r.exchange_id()
            }
        };
        let mut slow = Vec::new();
        for _ in 0..6 {
            slow.push(send("fk").await);
        }
        // fk's attempts are under way (claimed) before af's messages exist.
        let pool = gw.pool().clone();
        let mut in_flight = 0;
        for _ in 0..400 {
            let claimed: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM outbox WHERE claimed_until_us > $1 AND claimed_by IS NOT NULL",
            )
            .bind(samgate::clock::Clock::now_us(&samgate::clock::SystemClock))
            .fetch_one(&pool)
            .await
            .unwrap();
            in_flight = claimed;
            if claimed == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(in_flight, 2, "fk's two per-recipient slots are in use");
        let mut fast = Vec::new();
        for _ in 0..5 {
            fast.push(send("af").await);
        }
        let af = gw.client("kommun-kalmar");
        for id in &fast {
            let mut status = Value::Null;
            for _ in 0..400 {
                status = af.exchange_status(id).await;
                if status["status"] == "delivered" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert_eq!(status["status"], "delivered", "{status}");
        }
        assert_eq!(gw.recipient("af").received().len(), 5);
        // All of af's messages went through while fk had not yet answered
        // one: the slow recipient held only its own (at most per_recipient) rows.
        assert_eq!(gw.recipient("fk").received().len(), 0);
        for id in &slow {
            let s = af.exchange_status(id).await;
            assert_eq!(s["status"], "queued", "{s}");
        }
    }
);

both_backends!(
    a_recipient_endpoint_with_another_partys_certificate_gets_nothing,
    |db| async move {
        // fk's endpoint now points at kommun-kalmar's inbox: a real server
        // with a certificate from the same CA, valid for 127.0.0.1, but not
        // the one pinned for fk.
        let gw = TestGateway::spawn_with(db, |c| {
            let other = c
                .parties
                .iter()
                .find(|p| p.id.as_str() == "kommun-kalmar")
                .unwrap()
                .endpoint
                .clone();
            let fk = c
                .parties
                .iter_mut()
                .find(|p| p.id.as_str() == "fk")
                .unwrap();
            assert!(fk.endpoint_certificate_sha256.is_some(), "init pins it");
            fk.endpoint = other;
        })
        .await;
        record_consent(&gw, ALVA, PARTIES, CATEGORIES).await;
        let af = gw.client("af");
        let rsp = af.post_exchange(&attendance("fk")).await;
        assert_eq!(rsp.status, 502, "{}", rsp.text);
        assert_eq!(rsp.problem(), "recipient_failed");
        let id = rsp.exchange_id();
        let status = af.exchange_status(&id).await;
        assert_eq!(status["status"], "failed");
        // Async: every attempt fails the same way.
        let mut m = attendance("fk");
        m["delivery"] = json!("async");
        let rsp = af.post_exchange(&m).await;
        assert_eq!(rsp.status, 202);
        let id2 = rsp.exchange_id();
        let mut s = Value::Null;
        for _ in 0..400 {
            s = af.exchange_status(&id2).await;
            if s["attempts"].as_i64().unwrap_or(0) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(s["status"], "queued", "{s}");
        assert!(s["attempts"].as_i64().unwrap() >= 1, "{s}");
        assert!(gw.recipient("kommun-kalmar").received().is_empty());
        assert!(gw.recipient("fk").received().is_empty());
        // A correctly pinned recipient is still delivered to.
        let ok = gw
            .client("kommun-kalmar")
            .post_exchange(&attendance("af"))
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(gw.recipient("af").received().len(), 1);
    }
);

// Session 3 residual: the pinned delivery clients were built once at
// start. A reload that gave a party a new endpoint and a new pin kept the
// old pin (every delivery failed), and one that pinned a party anew left it
// on the chain-only client (a certificate from the same CA was accepted).
both_backends!(
    a_reload_that_changes_a_recipients_pin_takes_effect_at_once,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        record_consent(&gw, ALVA, PARTIES, CATEGORIES).await;
        let af = gw.client("af");
        // Step 1: fk moves to a new host (here kommun-kalmar's inbox) with
        // that host's certificate pinned.
        let moved = gw.write_config("moved.toml", |t| {
            let parties = t["party"].as_array_mut().unwrap();
            let kalmar = parties
                .iter()
                .find(|p| p["id"].as_str() == Some("kommun-kalmar"))
                .unwrap()
                .clone();
            let fk = parties
                .iter_mut()
                .find(|p| p["id"].as_str() == Some("fk"))
                .unwrap();
            fk["endpoint"] = kalmar["endpoint"].clone();
            fk["endpoint_certificate_sha256"] = kalmar["endpoint_certificate_sha256"].clone();
        });
        samgate::reload::reload(gw.state(), &moved).unwrap();
        let rsp = af.post_exchange(&attendance("fk")).await;
        assert_eq!(rsp.status, 200, "the new pin was not used: {}", rsp.text);
        assert_eq!(gw.recipient("kommun-kalmar").received().len(), 1);
        // Step 2: the pin goes back to fk's own certificate while the
        // endpoint stays: the host now presents a certificate that is not
        // the pinned one, and gets nothing.
        let fk_pin = gw
            .state()
            .config
            .parties
            .iter()
            .find(|p| p.id.as_str() == "fk")
            .and_then(|p| p.endpoint_certificate_sha256)
            .map(hex::encode)
            .unwrap();
        let repinned = gw.write_config("repinned.toml", |t| {
            let parties = t["party"].as_array_mut().unwrap();
            let kalmar_endpoint = parties
                .iter()
                .find(|p| p["id"].as_str() == Some("kommun-kalmar"))
                .unwrap()["endpoint"]
                .clone();
            let fk = parties
                .iter_mut()
                .find(|p| p["id"].as_str() == Some("fk"))
                .unwrap();
            fk["endpoint"] = kalmar_endpoint;
            fk["endpoint_certificate_sha256"] = toml::Value::String(fk_pin.clone());
        });
        samgate::reload::reload(gw.state(), &repinned).unwrap();
        let rsp = af.post_exchange(&attendance("fk")).await;
        assert_eq!(rsp.status, 502, "a stale client delivered: {}", rsp.text);
        assert_eq!(rsp.problem(), "recipient_failed");
        assert_eq!(gw.recipient("kommun-kalmar").received().len(), 1);
        assert!(gw.recipient("fk").received().is_empty());
    }
);

/// The `[[party]]` entry `id` of a configuration file being written.
fn party_mut<'a>(t: &'a mut toml::Table, id: &str) -> &'a mut toml::Value {
    t["party"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["id"].as_str() == Some(id))
        .unwrap()
}

/// A recipient server with kommun-kalmar's certificate (same CA, valid for
/// 127.0.0.1) at a new address, and its inbox URL: a host that is not fk.
async fn impostor(gw: &TestGateway) -> (crate::harness::Recipient, String) {
    let r = crate::harness::Recipient::start(
        gw.dir.path(),
        "kommun-kalmar",
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/inbox", r.addr.port());
    (r, url)
}

/// `t` without the `[[party]]` `party`, its users, and the routes that name
/// it on a side (an operator ending the cooperation with it).
fn without_party(t: &mut toml::Table, party: &str) {
    t["party"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["id"].as_str() != Some(party));
    if let Some(routes) = t.get_mut("route").and_then(|r| r.as_array_mut()) {
        routes.retain_mut(|r| {
            for side in ["from", "to"] {
                match r.get_mut(side) {
                    Some(toml::Value::Array(a)) => {
                        a.retain(|v| v.as_str() != Some(party));
                        if a.is_empty() {
                            return false;
                        }
                    }
                    Some(toml::Value::String(s)) if s == party => return false,
                    _ => {}
                }
            }
            true
        });
    }
    if let Some(users) = t.get_mut("user").and_then(|u| u.as_array_mut()) {
        users.retain(|u| u["party"].as_str() != Some(party));
    }
}

// Review of b7ddd91 (helper attack): with the pinned clients in the
// snapshot, a notice queued for a party that a reload then removed found
// no pinned client and left on the chain-only one, so any certificate of
// the same CA at the party's old URL received the participant's notice.
// A party the configuration does not know gets no client: nothing leaves.
both_backends!(
    a_queued_notice_to_a_party_a_reload_removed_is_not_sent_with_a_weaker_check,
    |db| async move {
        let gw = TestGateway::spawn_with(db, crate::harness::fast_retries).await;
        let consent = record_consent(&gw, ALVA, PARTIES, CATEGORIES).await;
        let rsp = gw.client("af").post_exchange(&attendance("fk")).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        // An impostor with kommun-kalmar's server certificate (same CA,
        // valid for 127.0.0.1) answers at fk's URL.
        let (impostor, url) = impostor(&gw).await;
        let hijacked = gw.write_config("hijacked.toml", |t| {
            let fk = party_mut(t, "fk");
            fk["endpoint"] = toml::Value::String(url.clone());
        });
        samgate::reload::reload(gw.state(), &hijacked).unwrap();
        let rsp = gw.revoke(&consent, &json!({})).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let attempts = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(MAX(attempts), 0) FROM exchanges \
                 WHERE msg_type = 'consent-revoked' AND recipient = 'fk'",
            )
            .fetch_one(gw.pool())
            .await
            .unwrap()
        };
        for _ in 0..400 {
            if attempts().await >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(attempts().await >= 2, "the notice to fk was attempted");
        assert!(impostor.received().is_empty(), "the pin holds");
        // The operator ends the cooperation with fk.
        let removed = gw.write_config("removed.toml", |t| without_party(t, "fk"));
        samgate::reload::reload(gw.state(), &removed).unwrap();
        let before = attempts().await;
        for _ in 0..400 {
            if attempts().await >= before + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            attempts().await >= before + 2,
            "attempts went on after the reload"
        );
        let got: Vec<Value> = impostor.received().iter().map(|r| r.json()).collect();
        assert!(
            got.is_empty(),
            "fk's notice went to a host that is not fk: {got:?}"
        );
        let last_error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM exchanges WHERE msg_type = 'consent-revoked' AND recipient = 'fk'",
        )
        .fetch_one(gw.pool())
        .await
        .unwrap();
        assert_eq!(last_error.as_deref(), Some("recipient is not configured"));
    }
);

// Second review of the pin fix (helper attack): a queued row kept the URL
// it was queued for, and the client was picked by party, so after a reload
// that moved a party and dropped its pin the message left for the old URL
// with the chain check only (any certificate of the CA there got it). A
// queued message now goes to the party's endpoint in force at the attempt.
both_backends!(
    a_queued_message_goes_to_the_endpoint_in_force_not_the_one_it_was_queued_for,
    |db| async move {
        let gw = TestGateway::spawn_with(db, crate::harness::fast_retries).await;
        record_consent(&gw, ALVA, PARTIES, CATEGORIES).await;
        let (impostor, url) = impostor(&gw).await;
        // fk's URL is, by mistake, the impostor's; fk stays pinned.
        let wrong = gw.write_config("wrong.toml", |t| {
            let fk = party_mut(t, "fk");
            fk["endpoint"] = toml::Value::String(url.clone());
        });
        samgate::reload::reload(gw.state(), &wrong).unwrap();
        let mut m = attendance("fk");
        m["delivery"] = json!("async");
        let rsp = gw.client("af").post_exchange(&m).await;
        assert_eq!(rsp.status, 202, "{}", rsp.text);
        let id = rsp.exchange_id();
        let af = gw.client("af");
        for _ in 0..400 {
            if af.exchange_status(&id).await["attempts"]
                .as_i64()
                .unwrap_or(0)
                >= 2
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(impostor.received().is_empty(), "the pin holds");
        // The operator corrects fk's URL and drops its pin (chain-only).
        let corrected = gw.write_config("corrected.toml", |t| {
            let fk = party_mut(t, "fk").as_table_mut().unwrap();
            fk.remove("endpoint_certificate_sha256");
        });
        samgate::reload::reload(gw.state(), &corrected).unwrap();
        let mut status = Value::Null;
        for _ in 0..400 {
            status = af.exchange_status(&id).await;
            if status["status"] == "delivered" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(status["status"], "delivered", "{status}");
        assert_eq!(
            gw.recipient("fk").received().len(),
            1,
            "fk's own endpoint got it"
        );
        let got: Vec<Value> = impostor.received().iter().map(|r| r.json()).collect();
        assert!(
            got.is_empty(),
            "a URL the configuration no longer names got it: {got:?}"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_within_body_timeout_gets_408() {
    let gw = TestGateway::spawn_with(Db::Sqlite, |c| {
        c.server.body_timeout = Duration::from_secs(1);
    })
    .await;
    let mut s = party_connect(&gw, "sfk-kalmar").await;
    // A complete head announcing 100 bytes, then only ten of them.
    s.write_all(
        b"POST /v1/consents HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"token\":",
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(30))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("urn:samgate:problem:request_timeout"),
        "{text}"
    );
    // The gateway keeps serving.
    assert_eq!(gw.client("fk").get("/healthz").await.status, 200);
}
