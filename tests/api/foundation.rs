//! Foundation: mTLS refusals, user-token attacks, configuration errors,
//! framing and body checks, health and metrics.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::harness::{
    b64_json as b64, sign_jws, sign_jws_der, Client, Db, Identity, TestGateway, ALVA,
};

both_backends!(
    healthz_answers_over_mtls_with_each_partys_certificate,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        for party in ["fk", "af", "kommun-kalmar", "region-kalmar", "sfk-kalmar"] {
            let rsp = gw.client(party).get("/healthz").await;
            assert_eq!(rsp.status, 200, "{party}: {}", rsp.text);
            assert!(rsp.headers.contains_key("x-request-id"));
        }
        let rsp = gw.auditor().get("/healthz").await;
        assert_eq!(rsp.status, 200);
        let rsp = gw.client("fk").get("/readyz").await;
        assert_eq!(rsp.status, 200);
    }
);

#[tokio::test]
async fn a_client_without_certificate_is_refused_in_the_handshake() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let c = Client::new(gw.addr(), &gw.path("pki/ca.pem"), None, None);
    let r = c.try_get("/healthz").await;
    assert!(
        r.is_err(),
        "a request without a client certificate got an answer"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let ca = samgate::pki::TestCa::generate("Other CA").unwrap();
    let c = gw.client_with(&Identity::issue(&ca, "fk"));
    assert!(c.try_get("/healthz").await.is_err());
}

#[tokio::test]
async fn an_unpinned_certificate_from_the_right_ca_is_closed_without_an_answer() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let c = gw.client_with(&Identity::issue(&gw.ca(), "fk"));
    // DESIGN §10: the pin is checked right after the handshake; the
    // connection is closed before any request is read (tests/api/network.rs).
    assert!(c.try_get("/healthz").await.is_err());
}

/// A raw TLS 1.1 ClientHello gets a fatal protocol_version alert.
#[tokio::test]
async fn tls_1_1_is_refused() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0x00, 0x35]); // two CBC suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00, 0x00, hello.len() as u8];
    hs.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02, 0x00, hs.len() as u8];
    record.extend_from_slice(&hs);
    let addr = gw.addr();
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&record).unwrap();
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
    })
    .await
    .unwrap();
    // A fatal alert record (0x15): rustls answers handshake_failure (40) when
    // no offered version is acceptable; protocol_version (70) is also fine.
    assert!(reply.len() >= 7, "no alert: {reply:?}");
    assert_eq!(reply[0], 0x15, "not an alert record: {reply:?}");
    assert_eq!(reply[5], 2, "not a fatal alert: {reply:?}");
    assert!(
        [40, 70].contains(&reply[6]),
        "not handshake_failure/protocol_version: {reply:?}"
    );
}

fn user_claims() -> serde_json::Value {
    #[expect(
        clippy::disallowed_methods,
        reason = "test tokens are valid from the real time the gateway clock starts at"
    )]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({"iss": "sfk-kalmar-audit-users", "sub": "revisor.anna", "aud": "samgate", "iat": now, "nbf": now, "exp": now + 600})
}

async fn auditor_with(gw: &TestGateway, token: &str) -> crate::harness::Rsp {
    let mut c = gw.client("sfk-kalmar-audit");
    c.bearer = Some(token.to_owned());
    c.get("/healthz").await
}

/// A user token signed by hand with the auditor party's user-token key.
fn sign_eddsa(gw: &TestGateway, header: serde_json::Value, claims: serde_json::Value) -> String {
    sign_jws(
        &gw.path("keys/users-sfk-kalmar-audit.pem"),
        &header,
        &claims,
    )
}

#[tokio::test]
async fn user_token_attacks_get_401_invalid_token() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    #[expect(
        clippy::disallowed_methods,
        reason = "test tokens are valid from the real time the gateway clock starts at"
    )]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // The genuine token works (the control).
    let good = sign_eddsa(&gw, json!({"alg": "EdDSA", "typ": "JWT"}), user_claims());
    assert_eq!(auditor_with(&gw, &good).await.status, 200);

    // No token at all.
    let rsp = gw.client("sfk-kalmar-audit").get("/healthz").await;
    assert_eq!(rsp.problem_code(), (401, "invalid_token"));

    let mut cases: Vec<(&str, String)> = Vec::new();
    // alg: none
    cases.push((
        "alg none",
        format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&user_claims())),
    ));
    // HS256 keyed with the public key (algorithm confusion)
    let public_pem = std::fs::read(gw.path("keys/users-sfk-kalmar-audit.pub.pem")).unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &user_claims(),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    cases.push(("HS256 with public key", hs));
    // wrong kid
    cases.push((
        "wrong kid",
        sign_eddsa(
            &gw,
            json!({"alg": "EdDSA", "kid": "not-this-key"}),
            user_claims(),
        ),
    ));
    // expired beyond the leeway
    let mut c = user_claims();
    c["exp"] = json!(now - 120);
    c["nbf"] = json!(now - 600);
    cases.push(("expired", sign_eddsa(&gw, json!({"alg": "EdDSA"}), c)));
    // not yet valid beyond the leeway
    let mut c = user_claims();
    c["nbf"] = json!(now + 300);
    cases.push(("not yet valid", sign_eddsa(&gw, json!({"alg": "EdDSA"}), c)));
    // wrong issuer / audience
    let mut c = user_claims();
    c["iss"] = json!("someone-else");
    cases.push(("wrong iss", sign_eddsa(&gw, json!({"alg": "EdDSA"}), c)));
    let mut c = user_claims();
    c["aud"] = json!("other-service");
    cases.push(("wrong aud", sign_eddsa(&gw, json!({"alg": "EdDSA"}), c)));
    // signed by another key
    let other = samgate::pki::generate_ed25519().unwrap();
    let forged = sign_jws_der(
        pem::parse(other.pkcs8_pem.as_bytes()).unwrap().contents(),
        &json!({"alg": "EdDSA"}),
        &user_claims(),
    );
    cases.push(("forged signature", forged));
    // tampered payload after signing
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = user_claims();
    c["sub"] = json!("someone.else");
    cases.push(("tampered", format!("{}.{}.{}", parts[0], b64(&c), parts[2])));

    for (what, token) in cases {
        let rsp = auditor_with(&gw, &token).await;
        assert_eq!(rsp.status, 401, "{what}: {}", rsp.text);
        assert_eq!(rsp.problem(), "invalid_token", "{what}");
    }
}

/// Staff e-ID subjects are often a personnummer; a user token naming one is
/// refused, so that it never lands in clear in the audit log (DESIGN §10).
#[tokio::test]
async fn a_user_token_whose_sub_is_a_personnummer_gets_401_invalid_token() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let with_sub = |sub: &str| {
        let mut c = user_claims();
        c["sub"] = json!(sub);
        sign_eddsa(&gw, json!({"alg": "EdDSA"}), c)
    };
    // Every spelling of DESIGN §3, and a samordningsnummer.
    let mut refused = crate::harness::pnr_forms(ALVA);
    refused.extend(["020314+9828".to_owned(), "20020314+9828".to_owned()]);
    refused.push("197010632391".to_owned());
    let mut auditor = gw.client("sfk-kalmar-audit");
    for sub in &refused {
        // An audit query: it would log its user in the audit record.
        auditor.bearer = Some(with_sub(sub));
        let rsp = auditor.get("/v1/audit/tree-head").await;
        assert_eq!(rsp.problem_code(), (401, "invalid_token"), "{}", rsp.text);
        assert!(!rsp.text.contains(&sub[sub.len() - 4..]), "{}", rsp.text);
    }
    // Digits that fail the check digit are no personnummer: a user id.
    for sub in ["200203149829", "0203149829", "hsa.12345"] {
        assert_eq!(auditor_with(&gw, &with_sub(sub)).await.status, 200, "{sub}");
    }
    crate::harness::assert_logs_clean(&[ALVA, "197010632391"]);
    let leaves: Vec<Vec<u8>> = sqlx::query_scalar("SELECT leaf FROM audit_records")
        .fetch_all(gw.pool())
        .await
        .unwrap();
    for l in leaves {
        let text = String::from_utf8_lossy(&l).to_string();
        for form in crate::harness::pnr_forms(ALVA) {
            assert!(!text.contains(&form), "a personnummer in the audit log");
        }
    }
}

#[tokio::test]
async fn ambiguous_framing_gets_400() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let tls = samgate::tls::client_config(
        &gw.path("pki/ca.pem"),
        &gw.path("pki/fk.pem"),
        &gw.path("pki/fk.key"),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = "POST /v1/consents HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    gw.client("fk").get("/healthz").await;
    let rsp = gw.client("fk").get("/metrics").await;
    assert_eq!(rsp.status, 200);
    assert!(
        rsp.text.contains("samgate_http_requests_total"),
        "{}",
        rsp.text
    );
    assert!(rsp.text.contains("route=\"/healthz\""));
}

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let rsp = gw.client("fk").get("/v1/nothing-here").await;
    assert_eq!(rsp.status, 404);
    assert_eq!(rsp.problem(), "not_found");
}

mod config_errors {
    use samgate::config::{Config, ConfigError};

    fn init_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
        dir
    }

    /// The error of the init config with one more attendance route from af,
    /// whose `to` and further keys are `rest` (TOML lines).
    fn refused_with_route(rest: &str) -> ConfigError {
        let dir = init_dir();
        load_modified(dir.path(), |t| {
            t + "\n[[route]]\nfrom = [\"af\"]\ntype = \"attendance-report\"\n\
                 purposes = [\"samordnad-rehabilitering\"]\nfields = [\"/period\"]\n"
                + rest
        })
        .unwrap_err()
    }

    /// The error's message names each of `words`.
    fn assert_names(err: &ConfigError, words: &[&str]) {
        let text = err.to_string();
        assert!(words.iter().all(|w| text.contains(w)), "{text}");
    }

    fn load_modified(
        dir: &std::path::Path,
        f: impl FnOnce(String) -> String,
    ) -> Result<Config, ConfigError> {
        let path = dir.join("samgate.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, f(text)).unwrap();
        Config::load(&path)
    }

    #[test]
    fn the_generated_config_loads() {
        let dir = init_dir();
        Config::load(&dir.path().join("samgate.toml")).unwrap();
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let dir = init_dir();
        let err = load_modified(dir.path(), |t| {
            t.replacen("[server]\n", "[server]\nlisten_backlog = 5\n", 1)
        })
        .unwrap_err();
        assert!(err.to_string().contains("listen_backlog"), "{err}");
    }

    #[test]
    fn a_route_naming_an_unknown_party_is_refused() {
        let err = refused_with_route("to = [\"skatteverket\"]\n");
        assert_names(&err, &["skatteverket", ".to"]);
    }

    #[test]
    fn a_missing_key_file_is_refused_by_key() {
        let dir = init_dir();
        std::fs::remove_file(dir.path().join("keys/vault.key")).unwrap();
        let err = Config::load(&dir.path().join("samgate.toml")).unwrap_err();
        assert_names(&err, &["keys.vault", "vault.key"]);
    }

    #[test]
    fn consent_not_required_is_refused_outside_statistics() {
        let err =
            refused_with_route("to = [\"fk\"]\nsubject = \"omit\"\nconsent = \"not-required\"\n");
        assert!(err.to_string().contains("not-required"), "{err}");
    }
}

#[tokio::test]
async fn a_party_over_its_rate_limit_gets_429_with_retry_after() {
    let gw = TestGateway::spawn_with(Db::Sqlite, |c| c.server.rate_limit_per_party = 1).await;
    let fk = gw.client("fk");
    // Burst is twice the rate: two requests pass, the third is limited.
    assert_eq!(fk.get("/healthz").await.status, 200);
    assert_eq!(fk.get("/healthz").await.status, 200);
    let rsp = fk.get("/healthz").await;
    assert_eq!(rsp.problem_code(), (429, "rate_limited"));
    assert!(rsp.headers.contains_key("retry-after"));
    // Another party has its own bucket.
    assert_eq!(gw.client("af").get("/healthz").await.status, 200);
}

#[tokio::test]
async fn the_plain_operations_listener_serves_only_health_and_metrics() {
    let gw = TestGateway::spawn_with(Db::Sqlite, |c| {
        c.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let ops = gw.gw.as_ref().unwrap().ops_addr.unwrap();
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let rsp = http
            .get(format!("http://{ops}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status().as_u16(), 200, "{path}");
    }
    let rsp = http
        .get(format!("http://{ops}/v1/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status().as_u16(), 404);
    let rsp = http
        .post(format!("http://{ops}/v1/exchanges"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status().as_u16(), 404);
}

both_backends!(api_answers_are_never_stored_by_a_cache, |db| async move {
    let gw = TestGateway::spawn(db).await;
    // A success and a problem, for an auditor and for a party.
    for rsp in [
        gw.auditor().get("/v1/audit/tree-head").await,
        gw.auditor().get("/v1/audit/records?limit=1").await,
        gw.client("fk")
            .get("/v1/exchanges/00000000-0000-7000-8000-000000000000")
            .await,
        gw.client("sfk-kalmar")
            .get("/v1/consents/not-a-consent")
            .await,
    ] {
        assert!(rsp.status == 200 || rsp.status == 404, "{}", rsp.text);
        assert_eq!(rsp.headers["cache-control"], "no-store", "{}", rsp.text);
    }
});
