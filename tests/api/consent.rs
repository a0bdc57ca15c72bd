//! The consent JWS battery (issue 4): each attack against the live server.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{b64_json as b64, now, sign_jws, Db, TestGateway, ALVA};

fn claims() -> Value {
    let n = now();
    json!({"jti": uuid::Uuid::new_v4().to_string(), "iss": "sfk-kalmar-intake", "sub": ALVA, "aud": "samgate",
           "iat": n, "nbf": n, "exp": n + 86_400 * 30,
           "parties": ["fk", "af", "kommun-kalmar"], "purposes": ["samordnad-rehabilitering"],
           "categories": ["attendance", "case"], "method": "written", "recorded_by": "handlaggare.eva"})
}

fn sign_with(pem_path: &std::path::Path, header: Value, claims: &Value) -> String {
    sign_jws(pem_path, &header, claims)
}

fn good_header() -> Value {
    json!({"alg": "EdDSA", "kid": "2026-1", "typ": "JWT"})
}

both_backends!(
    consent_token_attacks_are_refused_with_their_codes,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let key = gw.path("keys/issuer-sfk-kalmar-intake.pem");
        let intake = gw.client("sfk-kalmar");
        let post = |t: String| {
            let c = intake.clone();
            async move { c.post("/v1/consents", &json!({"token": t})).await }
        };

        // Control: a genuine consent is recorded, and a replay of it is 409.
        let good = sign_with(&key, good_header(), &claims());
        let rsp = post(good.clone()).await;
        assert_eq!(rsp.status, 201, "{}", rsp.text);
        let summary = rsp.json();
        assert_eq!(summary["state"], "active");
        assert!(summary["subject"].as_str().unwrap().starts_with("ps1_"));
        assert!(!rsp.text.contains(ALVA));
        let rsp = post(good.clone()).await;
        assert_eq!(rsp.problem_code(), (409, "consent_replayed"));

        let other = tempfile::tempdir().unwrap();
        let k = samgate::pki::generate_ed25519().unwrap();
        std::fs::write(other.path().join("k.pem"), k.pkcs8_pem.as_bytes()).unwrap();
        let n = now();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims();
            f(&mut c);
            sign_with(&key, good_header(), &c)
        };
        let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut tampered_claims = claims();
        tampered_claims["categories"] = json!(["health"]);
        let hs = jsonwebtoken::encode(
            &{
                let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                h.kid = Some("2026-1".into());
                h
            },
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(
                &std::fs::read(gw.path("keys/issuer-sfk-kalmar-intake.pub.pem")).unwrap(),
            ),
        )
        .unwrap();
        let cases: Vec<(&str, String, u16, &str)> = vec![
            (
                "wrong key",
                sign_with(&other.path().join("k.pem"), good_header(), &claims()),
                401,
                "consent_signature",
            ),
            (
                "unknown kid",
                sign_with(&key, json!({"alg": "EdDSA", "kid": "1999-9"}), &claims()),
                401,
                "unknown_issuer",
            ),
            (
                "unknown iss",
                with(&|c| c["iss"] = json!("someone-else")),
                401,
                "unknown_issuer",
            ),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    b64(&json!({"alg": "none", "kid": "2026-1"})),
                    b64(&claims())
                ),
                401,
                "consent_signature",
            ),
            ("HS256 with the public key", hs, 401, "consent_signature"),
            (
                "tampered after signing",
                format!("{}.{}.{}", parts[0], b64(&tampered_claims), parts[2]),
                401,
                "consent_signature",
            ),
            (
                "expired",
                with(&|c| {
                    c["nbf"] = json!(n - 86_400 * 10);
                    c["exp"] = json!(n - 3600);
                }),
                422,
                "invalid_consent_claims",
            ),
            (
                "not yet valid",
                with(&|c| {
                    c["nbf"] = json!(n + 86_400);
                }),
                422,
                "invalid_consent_claims",
            ),
            (
                "lifetime too long",
                with(&|c| {
                    c["exp"] = json!(n + 86_400 * 800);
                }),
                422,
                "invalid_consent_claims",
            ),
            (
                "sub invalid",
                with(&|c| {
                    c["sub"] = json!("200203149829");
                }),
                422,
                "invalid_personnummer",
            ),
            (
                "unknown party",
                with(&|c| {
                    c["parties"] = json!(["fk", "skatteverket"]);
                }),
                422,
                "invalid_consent_claims",
            ),
            (
                "unknown purpose",
                with(&|c| {
                    c["purposes"] = json!(["marknadsforing"]);
                }),
                422,
                "invalid_consent_claims",
            ),
            (
                "unknown category",
                with(&|c| {
                    c["categories"] = json!(["tax"]);
                }),
                422,
                "invalid_consent_claims",
            ),
            (
                "nbf after exp",
                with(&|c| {
                    c["exp"] = json!(n - 10);
                    c["nbf"] = json!(n);
                }),
                422,
                "invalid_consent_claims",
            ),
        ];
        for (what, token, status, code) in cases {
            let rsp = post(token).await;
            assert_eq!(rsp.status, status, "{what}: {}", rsp.text);
            assert_eq!(rsp.problem(), code, "{what}");
            assert!(
                !rsp.text.contains("200203149829") && !rsp.text.contains(ALVA),
                "{what} echoed a personnummer"
            );
        }

        // Only intake parties may record consent.
        let rsp = gw
            .client("af")
            .post(
                "/v1/consents",
                &json!({"token": sign_with(&key, good_header(), &claims())}),
            )
            .await;
        assert_eq!(rsp.problem_code(), (403, "forbidden_role"));

        // Reading a consent: intake and auditor yes, unknown id 404.
        let id = summary["id"].as_str().unwrap();
        assert_eq!(
            gw.auditor().get(&format!("/v1/consents/{id}")).await.status,
            200
        );
        let rsp = intake
            .get(&format!("/v1/consents/{}", uuid::Uuid::new_v4()))
            .await;
        assert_eq!(rsp.problem_code(), (404, "not_found"));
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_sign_cli_prints_a_token_the_gateway_accepts() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_samgate"))
        .args(["consent", "sign", "--key"])
        .arg(gw.path("keys/issuer-sfk-kalmar-intake.pem"))
        .args([
            "--issuer",
            "sfk-kalmar-intake",
            "--key-id",
            "2026-1",
            "--subject-file",
            "-",
            "--parties",
            "fk,af",
            "--purposes",
            "samordnad-rehabilitering",
            "--categories",
            "attendance,case",
            "--days",
            "30",
            "--method",
            "bankid",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"020314-9828\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().lines().count(), 1);
    let rsp = gw.submit_consent(token.trim()).await;
    assert_eq!(rsp.status, 201, "{}", rsp.text);
}
