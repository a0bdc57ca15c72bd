//! The privacy edges of DESIGN §10, end to end: real mTLS, real recipients
//! on loopback, both backends.

use std::time::Duration;

use samgate::audit::record::AuditRecord;
use samgate::policy::SubjectMode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{
    assert_free_of, assert_logs_clean, backend_available, consent_args, consent_to_all, count,
    envelope, example, fast_retries, now, pnr_forms, record_signed, valid_number, Db, Reply,
    TestGateway, ALL_CATEGORIES, ALL_PARTIES, ALVA, NILS,
};

fn message(to: &str, t: &str, payload: Value) -> Value {
    envelope(to, t, ALVA, payload)
}

fn async_attendance() -> Value {
    let mut m = message("fk", "attendance-report", example("attendance-report"));
    m["delivery"] = json!("async");
    m
}

/// Sends an async attendance report that fk refuses (503) until told
/// otherwise, and waits for its first attempt; its id and status then.
async fn queue_refused(gw: &TestGateway) -> (String, Value) {
    gw.recipient("fk").set_default_reply(Reply::status(503));
    let rsp = gw.client("af").post_exchange(&async_attendance()).await;
    assert_eq!(rsp.status, 202, "{}", rsp.text);
    let id = rsp.exchange_id();
    let st = gw
        .client("af")
        .wait_for_exchange(&id, |s| s["attempts"].as_i64() >= Some(1))
        .await;
    (id, st)
}

/// Waits until the queued exchange has ended; its final status. Only then
/// does fk come back: an attempt already past its check at that moment
/// may still be on the wire (a withdrawal is effective for what starts
/// after it). Then waits past the backoff, so that a wrong delivery would
/// have arrived.
async fn ended_then_recipient_back(gw: &TestGateway, id: &str) -> Value {
    let st = gw
        .client("af")
        .wait_for_exchange(id, |s| s["status"] != "queued")
        .await;
    gw.recipient("fk").set_default_reply(Reply::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    st
}

/// The `exchange-failed` records of one exchange.
async fn failures(gw: &TestGateway, id: &str) -> Vec<AuditRecord> {
    gw.records_of(id)
        .await
        .into_iter()
        .filter(|r| r.action.as_str() == "exchange-failed")
        .collect()
}

/// Everything the database holds, as text: the SQLite file (after a stop)
/// or every table of the test's PostgreSQL schema (bytea as hex).
async fn stored_text(gw: &mut TestGateway, db: Db) -> String {
    match db {
        Db::Sqlite => String::from_utf8_lossy(&gw.sqlite_bytes().await).into_owned(),
        Db::Postgres => {
            let pool = gw.pool().clone();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(tables.contains(&"audit_records".to_owned()));
            let mut out = String::new();
            for t in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM {t} t"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                for r in rows {
                    out.push_str(&r);
                    out.push('\n');
                }
            }
            gw.stop().await;
            out
        }
    }
}

/// Asserts that `text` holds `needle` neither as is nor hex-encoded.
fn assert_absent(text: &str, needle: &str, what: &str) {
    assert!(!text.contains(needle), "{what} is stored");
    assert!(
        !text.contains(&hex::encode(needle.as_bytes())),
        "{what} is stored (hex)"
    );
}

/// No form of these numbers is stored, as is or hex-encoded.
fn assert_none_stored(text: &str, numbers: &[&str], what: &str) {
    for n in numbers {
        for form in pnr_forms(n) {
            assert_absent(text, &form, what);
        }
    }
}

/// `pc1_` reference computed from the key file, independently of samgate.
fn expected_reference(gw: &TestGateway, recipient: &str, consent_id: &str) -> String {
    let master = std::fs::read(gw.path("keys/pseudonym.key")).unwrap();
    let info = format!("samgate/pseudonym/v1/{recipient}");
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&master);
    let info_parts = [info.as_bytes()];
    let okm = prk.expand(&info_parts, ring::hmac::HMAC_SHA256).unwrap();
    let key = ring::hmac::Key::from(okm);
    let tag = ring::hmac::sign(&key, format!("consent:{consent_id}").as_bytes());
    format!(
        "pc1_{}",
        data_encoding::BASE32_NOPAD
            .encode(&tag.as_ref()[..16])
            .to_ascii_lowercase()
    )
}

/// Every scalar of a JSON value, as text.
fn scalars(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.values().for_each(|x| scalars(x, out)),
        Value::Array(a) => a.iter().for_each(|x| scalars(x, out)),
        Value::String(s) => out.push(s.clone()),
        Value::Null => {}
        other => out.push(other.to_string()),
    }
}

/// The configured routes of `msg_type` to `to`.
fn routes_to<'a>(
    c: &'a mut samgate::config::Config,
    msg_type: &'a str,
    to: &'a str,
) -> impl Iterator<Item = &'a mut samgate::policy::route::RouteConfig> {
    c.routes
        .iter_mut()
        .filter(move |r| r.msg_type == msg_type && r.to.iter().any(|p| p.as_str() == to))
}

/// The values of a pseudonymised message that could identify the person or
/// the consent: everything but the parties, type, purpose and payload.
fn person_values(received: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for k in ["exchange_id", "subject", "consent_id"] {
        scalars(&received[k], &mut out);
    }
    out
}

both_backends!(
    consent_id_is_no_join_key_across_routes_or_recipients,
    |db| async move {
        // FK gets the plan pseudonymised too, so two recipients hold one.
        let gw = TestGateway::spawn_with(db, |c| {
            for r in routes_to(c, "rehabilitation-plan", "fk") {
                r.subject = SubjectMode::Pseudonymise;
            }
        })
        .await;
        let consent = consent_to_all(&gw, ALVA).await;
        let kommun = gw.client("kommun-kalmar");
        // The closure last: once delivered it limits the consent to
        // follow-up (DESIGN §13).
        for (to, t) in [
            ("region-kalmar", "rehabilitation-plan"),
            ("fk", "rehabilitation-plan"),
            ("region-kalmar", "closure"),
        ] {
            let rsp = kommun.post_exchange(&message(to, t, example(t))).await;
            assert_eq!(rsp.status, 200, "{to} {t}: {}", rsp.text);
        }
        let region = gw.recipient("region-kalmar").received();
        let fk = gw.recipient("fk").received();
        let (plan, closure) = (region[0].json(), region[1].json());
        let fk_plan = fk[0].json();
        assert_eq!(
            plan["consent_id"],
            json!(expected_reference(&gw, "region-kalmar", &consent))
        );
        assert_eq!(
            fk_plan["consent_id"],
            json!(expected_reference(&gw, "fk", &consent))
        );
        assert_eq!(closure["consent_id"], json!(consent), "reveal: the id");
        assert!(plan["subject"]["pseudonym"].is_string());
        // Nothing of the pseudonymised plan occurs in the revealed closure
        // or in the other recipient's plan, and vice versa.
        for (a, b) in [(&plan, &closure), (&plan, &fk_plan), (&fk_plan, &plan)] {
            let other = b.to_string();
            for v in person_values(a) {
                assert!(!other.contains(&v), "{v} joins two messages");
            }
        }
        assert_ne!(
            region[0].headers["samgate-exchange-id"],
            fk[0].headers["samgate-exchange-id"]
        );
    }
);

both_backends!(a_revocation_stops_a_queued_message, |db| async move {
    let gw = TestGateway::spawn_with(db, fast_retries).await;
    let consent = consent_to_all(&gw, ALVA).await;
    let (id, st) = queue_refused(&gw).await;
    assert_eq!(st["status"], "queued", "{st}");
    let rev = gw.revoke(&consent, &json!({})).await;
    assert_eq!(rev.status, 200, "{}", rev.text);
    let st = ended_then_recipient_back(&gw, &id).await;
    assert_eq!(st["status"], "failed", "{st}");
    assert_eq!(st["last_error"], "consent_revoked");
    // Past the backoff: still nothing arrived.
    let fk = gw.recipient("fk");
    assert!(fk.received().is_empty(), "delivered after the revocation");
    let failed = failures(&gw, &id).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason.as_deref(), Some("consent_revoked"));
    assert_eq!(failed[0].decision.as_str(), "failed");
    let left = count(gw.pool(), "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(left, 0);
});

both_backends!(
    a_queued_message_past_expire_after_expires_undelivered,
    |db| async move {
        let clock = samgate::clock::OffsetClock::new();
        let gw = TestGateway::spawn_clocked_with(db, clock.clone(), fast_retries).await;
        consent_to_all(&gw, ALVA).await;
        let (id, _) = queue_refused(&gw).await;
        clock.advance_secs(25 * 3600);
        let st = ended_then_recipient_back(&gw, &id).await;
        assert_eq!(st["status"], "expired", "{st}");
        assert!(gw.recipient("fk").received().is_empty());
        let failed = failures(&gw, &id).await;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].decision.as_str(), "expired");
        assert_eq!(failed[0].reason.as_deref(), Some("expired"));
    }
);

both_backends!(
    a_consent_that_expires_while_queued_stops_the_message,
    |db| async move {
        let clock = samgate::clock::OffsetClock::new();
        let gw = TestGateway::spawn_clocked_with(db, clock.clone(), |c| {
            fast_retries(c);
            c.delivery.expire_after = Duration::from_secs(90 * 86_400);
        })
        .await;
        let mut args = consent_args(&gw, ALVA, ALL_PARTIES, ALL_CATEGORIES);
        args.days = 30;
        record_signed(&gw, &args, now()).await;
        let (id, _) = queue_refused(&gw).await;
        clock.advance_secs(31 * 86_400);
        let st = ended_then_recipient_back(&gw, &id).await;
        assert_eq!(st["status"], "failed", "{st}");
        assert_eq!(st["last_error"], "consent_expired");
        assert!(gw.recipient("fk").received().is_empty());
        let reasons: Vec<_> = failures(&gw, &id)
            .await
            .into_iter()
            .map(|r| r.reason)
            .collect();
        assert_eq!(reasons, [Some("consent_expired".to_owned())]);
    }
);

both_backends!(an_unknown_reply_type_leaves_no_trace, |db| async move {
    let mut gw = TestGateway::spawn_with_consent(db, ALVA).await;
    let long = "Q".repeat(300);
    let with_number = format!("svar om {}", &pnr_forms(NILS)[1]);
    let mut ids = Vec::new();
    for t in [&long, &with_number] {
        gw.recipient("fk")
            .push_reply(Reply::json(json!({"type": t, "payload": {"note": t}})));
        let rsp = gw
            .client("af")
            .post_exchange(&message(
                "fk",
                "attendance-report",
                example("attendance-report"),
            ))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_eq!(rsp.json()["reply"], Value::Null);
        assert_eq!(rsp.json()["reply_withheld"], true);
        assert!(!rsp.text.contains(t.as_str()));
        let id = rsp.exchange_id();
        let withheld: Vec<_> = gw
            .records_of(&id)
            .await
            .into_iter()
            .filter(|r| r.action.as_str() == "reply-withheld")
            .collect();
        assert_eq!(withheld.len(), 1);
        assert_eq!(withheld[0].reason.as_deref(), Some("unknown_type"));
        assert_eq!(withheld[0].msg_type, None);
        ids.push(id);
    }
    // Neither the auditor's view nor the extract shows the text.
    let records = gw.auditor().get("/v1/audit/records?limit=1000").await;
    assert!(!records.text.contains(&long));
    let extract = gw.client("sfk-kalmar").disclosures(ALVA).await;
    assert!(!extract.text.contains(&long));
    assert_logs_clean(&[NILS]);
    assert!(
        !String::from_utf8_lossy(&crate::harness::captured_logs().lock().unwrap()).contains(&long)
    );
    let stored = stored_text(&mut gw, db).await;
    assert_absent(&stored, &long, "the 300-character type");
    assert_none_stored(&stored, &[NILS], "a number from the reply");
});

both_backends!(
    a_reverse_route_is_used_only_for_its_purposes,
    |db| async move {
        // The referral may also go to the group for follow-up; the group's
        // reply route lists only samordnad-rehabilitering.
        let gw = TestGateway::spawn_with(db, |c| {
            for r in routes_to(c, "referral", "sfk-kalmar") {
                r.purposes.push("uppfoljning".into());
            }
        })
        .await;
        consent_to_all(&gw, ALVA).await;
        let reply = json!({"type": "referral", "payload": {"referral_id": "R-2026-17", "decision": "accepted"}});
        for (purpose, passes) in [("samordnad-rehabilitering", true), ("uppfoljning", false)] {
            gw.recipient("sfk-kalmar")
                .push_reply(Reply::json(reply.clone()));
            let mut m = message("sfk-kalmar", "referral", example("referral"));
            m["purpose"] = json!(purpose);
            let rsp = gw.client("fk").post_exchange(&m).await;
            assert_eq!(rsp.status, 200, "{}", rsp.text);
            let body = rsp.json();
            if passes {
                assert_eq!(body["reply"]["payload"]["decision"], "accepted", "{body}");
            } else {
                assert_eq!(body["reply"], Value::Null, "{body}");
                assert_eq!(body["reply_withheld"], true);
                let id = body["exchange_id"].as_str().unwrap();
                assert!(gw
                    .records_of(id)
                    .await
                    .iter()
                    .any(|r| r.action.as_str() == "reply-withheld"));
            }
        }
    }
);

both_backends!(
    a_number_in_a_free_field_never_reaches_a_pseudonymise_recipient,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        let mut plan = example("rehabilitation-plan");
        plan["goal"] = json!("Mål för 20020314-9828");
        plan["sub_goals"][1]["description"] = json!("Besök med 0203149828");
        plan["treatment_activities"][0]["description"] = json!(format!("x{NILS}"));
        let rsp = gw
            .client("kommun-kalmar")
            .post_exchange(&message(
                "region-kalmar",
                "rehabilitation-plan",
                plan.clone(),
            ))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let body = rsp.json();
        let withheld = body["withheld"].as_array().unwrap();
        for p in [
            "/goal",
            "/sub_goals/1/description",
            "/treatment_activities/0/description",
        ] {
            assert!(withheld.contains(&json!(p)), "{p} not withheld: {body}");
        }
        assert!(!body["forwarded"]
            .as_array()
            .unwrap()
            .contains(&json!("/goal")));
        let received = gw.recipient("region-kalmar").received()[0].json();
        let text = received.to_string();
        assert_free_of(&text, &[ALVA, NILS], "what reached the recipient");
        assert!(received["payload"].get("goal").is_none());
        assert_eq!(received["payload"]["sub_goals"][0], plan["sub_goals"][0]);
        assert!(received["payload"]["sub_goals"][1]
            .get("description")
            .is_none());
        let id = body["exchange_id"].as_str().unwrap();
        let forwarded = gw
            .records_of(id)
            .await
            .into_iter()
            .find(|r| r.action.as_str() == "exchange-forwarded")
            .unwrap();
        assert_eq!(forwarded.reason.as_deref(), Some("identifier_in_text"));
        // A reveal route passes the text: it reveals the person anyway.
        let rsp = gw
            .client("kommun-kalmar")
            .post_exchange(&message("fk", "rehabilitation-plan", plan))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_eq!(
            gw.recipient("fk").received()[0].json()["payload"]["goal"],
            "Mål för 20020314-9828"
        );
    }
);

both_backends!(client_chosen_strings_never_rest_in_clear, |db| async move {
    let mut gw = TestGateway::spawn_with_consent(db, ALVA).await;
    let af = gw.client("af");
    let msg = message("fk", "attendance-report", example("attendance-report"));
    // Request ids: kept when sane, replaced when they could hold a number.
    for (sent, kept) in [
        ("pnr-20020314-9828", false),
        ("a123456", false),
        ("has space", false),
        (&*"r".repeat(65), false),
        ("abc.DEF_1:2-12345", true),
    ] {
        let rsp = af
            .post_with(
                "/v1/healthz-does-not-exist",
                &json!({}),
                &[("X-Request-Id", sent)],
            )
            .await;
        let used = rsp.headers["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(used == sent, kept, "{sent} -> {used}");
        assert!(
            samgate::http::router::acceptable_request_id(&used),
            "{used}"
        );
    }
    // An exchange with a number in its request id and idempotency key,
    // and a reply that holds a number.
    gw.recipient("fk").push_reply(Reply::json(json!({"type": "attendance-report", "payload": {"absence_reason_category": format!("see {NILS}")}})));
    let headers = [
        ("X-Request-Id", "pnr-20020314-9828"),
        ("Idempotency-Key", "19-20020314-9828"),
    ];
    let a = af.post_exchange_with(&msg, &headers).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let b = af.post_exchange_with(&msg, &headers).await;
    assert_eq!(
        a.json()["exchange_id"],
        b.json()["exchange_id"],
        "replayed by the digest"
    );
    assert_eq!(gw.recipient("fk").received().len(), 1);
    let id = a.exchange_id();
    for r in gw.records_of(&id).await {
        let rid = r.request_id.unwrap_or_default();
        assert!(!rid.contains("9828") && samgate::http::router::acceptable_request_id(&rid));
    }
    // An auditor's long path is cut in its audit-query record.
    let long = "a".repeat(1000);
    let rsp = gw.auditor().get(&format!("/v1/exchanges/{long}")).await;
    assert_eq!(rsp.status, 404);
    let leaves: Vec<Vec<u8>> = sqlx::query_scalar("SELECT leaf FROM audit_records")
        .fetch_all(gw.pool())
        .await
        .unwrap();
    for l in &leaves {
        let r = AuditRecord::from_leaf(l).unwrap();
        assert!(r.reason.as_deref().unwrap_or("").chars().count() <= 256);
    }
    assert_logs_clean(&[ALVA, NILS]);
    let stored = stored_text(&mut gw, db).await;
    assert_absent(&stored, &long, "the long path");
    assert_absent(&stored, "19-20020314-9828", "the idempotency key");
    assert_none_stored(&stored, &[ALVA, NILS], "a personnummer");
});

both_backends!(
    the_delivery_signature_is_not_stored_and_still_verifies,
    |db| async move {
        let gw = TestGateway::spawn_with(db, |c| {
            c.delivery.backoff_initial = Duration::from_millis(20);
            c.delivery.backoff_max = Duration::from_millis(50);
        })
        .await;
        consent_to_all(&gw, ALVA).await;
        let fk = gw.recipient("fk");
        fk.set_default_reply(Reply::status(503));
        let rsp = gw.client("af").post_exchange(&async_attendance()).await;
        let id = rsp.exchange_id();
        let stored: String =
            sqlx::query_scalar("SELECT signature FROM outbox WHERE exchange_id = $1")
                .bind(id.clone())
                .fetch_one(gw.pool())
                .await
                .unwrap();
        assert_eq!(stored, "", "the signature rests in the outbox");
        fk.set_default_reply(Reply::default());
        let st = gw
            .client("af")
            .wait_for_exchange(&id, |s| s["status"] == "delivered")
            .await;
        assert_eq!(st["status"], "delivered", "{st}");
        let got = &fk.received()[0];
        let spki = pem::parse(std::fs::read(gw.path("keys/delivery.pub.pem")).unwrap()).unwrap();
        let key: [u8; 32] = spki.contents()[spki.contents().len() - 32..]
            .try_into()
            .unwrap();
        let sig = got.headers["samgate-signature"].to_str().unwrap();
        assert!(samgate::exchange::deliver::verify_detached(
            &key, sig, &got.body
        ));
    }
);

both_backends!(
    served_records_are_exactly_their_leaf_plus_leaf,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        let c = gw.auditor();
        let page = c.get("/v1/audit/records").await.json();
        let export = c.get("/v1/audit/export").await.text;
        let mut served: Vec<Value> = page["records"].as_array().unwrap().clone();
        served.extend(
            export
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|v| v.get("tree_head").is_none()),
        );
        assert!(served.len() >= 2);
        use base64::Engine;
        for r in served {
            let leaf = base64::engine::general_purpose::STANDARD
                .decode(r["leaf"].as_str().unwrap())
                .unwrap();
            let mut rest = r.as_object().unwrap().clone();
            rest.remove("leaf");
            assert_eq!(serde_json_canonicalizer::to_vec(&rest).unwrap(), leaf);
        }
    }
);

#[test]
fn every_private_key_init_writes_is_read_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let mut stack = vec![dir.path().to_path_buf()];
    let mut checked = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            if !text.contains("PRIVATE KEY-----") {
                continue;
            }
            let out = std::process::Command::new("openssl")
                .args(["pkey", "-noout", "-in"])
                .arg(&p)
                .output()
                .expect("openssl is installed (.ci/run)");
            assert!(
                out.status.success(),
                "openssl cannot read {}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    // CA, gateway (2), the parties' client and server keys, issuer, audit,
    // delivery and user-token keys.
    assert!(checked >= 10, "{checked}");
    // The Ed25519 ones are PKCS#8 v1 (RFC 8410): version 0, no public key.
    for f in [
        "keys/audit.pem",
        "keys/delivery.pem",
        "keys/issuer-sfk-kalmar-intake.pem",
    ] {
        let der = pem::parse(std::fs::read(dir.path().join(f)).unwrap()).unwrap();
        assert_eq!(der.contents().len(), 48, "{f}");
        assert_eq!(&der.contents()[..5], &[0x30, 0x2e, 0x02, 0x01, 0x00], "{f}");
    }
}

/// The six §3 spellings of a canonical number.
fn spellings(c: &str) -> Vec<String> {
    let (long_date, tail) = c.split_at(8);
    let short_date = &long_date[2..];
    vec![
        c.to_owned(),
        format!("{long_date}-{tail}"),
        format!("{long_date}+{tail}"),
        format!("{short_date}{tail}"),
        format!("{short_date}-{tail}"),
        format!("{short_date}+{tail}"),
    ]
}

/// DESIGN §10, through the real gateway: random rehabilitation plans with
/// numbers planted in random free-text fields (top level and nested) reach
/// the pseudonymising recipient (region-kalmar) without any of them.
fn planted_numbers_never_reach_the_recipient(db: Db) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !rt.block_on(backend_available(db)) {
        return;
    }
    let gw = rt.block_on(async {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        gw
    });
    let plant = (
        0usize..4,
        (1930i32..2010, 1u32..13, 1u32..29, 1u32..1000, any::<bool>()),
        0usize..6,
        "[a-zåäö0-9 .:-]{0,8}",
        "[a-zåäö0-9 .:-]{0,8}",
    );
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(plant, 1..4), |plants| {
        let mut plan = example("rehabilitation-plan");
        let mut numbers = Vec::new();
        for (field, (y, m, d, serial, samordning), form, before, after) in plants {
            let c = valid_number(y, m, d, serial, samordning);
            let text = format!("{before}{}{after}", spellings(&c)[form]);
            let slot = match field {
                0 => &mut plan["goal"],
                1 => &mut plan["sub_goals"][0]["description"],
                2 => &mut plan["sub_goals"][1]["description"],
                _ => &mut plan["treatment_activities"][0]["description"],
            };
            *slot = json!(text);
            numbers.push(c);
        }
        let (status, received) = rt.block_on(async {
            let rsp = gw
                .client("kommun-kalmar")
                .post_exchange(&message("region-kalmar", "rehabilitation-plan", plan))
                .await;
            let received = gw.recipient("region-kalmar").received();
            (
                rsp.status,
                received.last().map(|r| r.json()).unwrap_or(Value::Null),
            )
        });
        prop_assert_eq!(status, 200);
        let text = received.to_string();
        for c in &numbers {
            for s in spellings(c) {
                prop_assert!(!text.contains(&s), "{} reached the recipient", s);
            }
        }
        let mut strings = Vec::new();
        scalars(&received["payload"], &mut strings);
        prop_assert!(strings
            .iter()
            .all(|s| !samgate::exchange::numbers::contains_personnummer(s, gw.today())));
        Ok(())
    });
    rt.block_on(async move { drop(gw) });
    result.unwrap();
}

#[test]
fn planted_numbers_never_reach_a_pseudonymise_recipient_sqlite() {
    planted_numbers_never_reach_the_recipient(Db::Sqlite);
}

#[test]
fn planted_numbers_never_reach_a_pseudonymise_recipient_postgres() {
    planted_numbers_never_reach_the_recipient(Db::Postgres);
}

// Review of session 4 (helper attack): serde's "unknown field `x`" and its
// path named the client's key as sent, and the payload schema named an
// unexpected property by its pointer, so a key that is a personnummer came
// back in the problem answer (DESIGN §5: never a personnummer).
both_backends!(
    a_body_key_that_is_a_personnummer_is_not_echoed_in_the_problem,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        consent_to_all(&gw, ALVA).await;
        let af = gw.client("af");
        // An unknown envelope key.
        let mut m = message("fk", "attendance-report", example("attendance-report"));
        m[NILS] = json!(true);
        let rsp = af.post_exchange(&m).await;
        assert_eq!(rsp.status, 400, "{}", rsp.text);
        assert_eq!(rsp.problem(), "invalid_envelope");
        assert_free_of(&rsp.text, &[NILS], "the envelope problem");
        assert!(
            rsp.text.contains("unknown field `(not shown)`"),
            "{}",
            rsp.text
        );
        // An unknown payload property.
        let mut payload = example("attendance-report");
        payload[NILS] = json!(1);
        let rsp = af
            .post_exchange(&message("fk", "attendance-report", payload))
            .await;
        assert_eq!(rsp.status, 422, "{}", rsp.text);
        assert_eq!(rsp.problem(), "schema_violation");
        assert_free_of(&rsp.text, &[NILS], "the schema problem");
        // A known key is still named.
        let mut m = message("fk", "attendance-report", example("attendance-report"));
        m["surprise"] = json!(true);
        let rsp = af.post_exchange(&m).await;
        assert!(
            rsp.text.contains("unknown field `surprise`"),
            "{}",
            rsp.text
        );
        // The auditor's subject search refuses its extra key the same way.
        let rsp = gw
            .auditor()
            .post(
                "/v1/audit/subject-search",
                &json!({"personnummer": ALVA, NILS: 1, "reason": "review"}),
            )
            .await;
        assert_eq!(rsp.status, 400, "{}", rsp.text);
        assert_free_of(&rsp.text, &[ALVA, NILS], "the subject-search problem");
        assert_logs_clean(&[NILS]);
    }
);

// Second review (helper attack): `quote_id` passed any lowercase-first id
// with digits, so a `to`, `type` or `purpose` of `x` plus a personnummer
// came back in the problem; the auditor's filters put one into the
// permanent `audit-query` record (an RFC 3339 fraction holds any digits).
both_backends!(
    a_personnummer_behind_a_letter_is_not_echoed_nor_logged,
    |db| async move {
        // No consent is needed: the envelope and the route are checked first.
        let gw = TestGateway::spawn(db).await;
        let af = gw.client("af");
        let hidden = format!("x{}", &NILS[..8]) + "-" + &NILS[8..];
        for field in ["to", "type", "purpose"] {
            let mut m = message("fk", "attendance-report", example("attendance-report"));
            m[field] = json!(hidden);
            let rsp = af.post_exchange(&m).await;
            assert!(rsp.status >= 400, "{field}: {}", rsp.text);
            assert_free_of(&rsp.text, &[NILS], field);
        }
        let a = gw.auditor();
        let fraction = format!("/v1/audit/records?from=2024-01-01T00:00:00.{NILS}Z");
        let rsp = a.get(&fraction).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let rsp = a.get(&format!("/v1/audit/records?party={hidden}")).await;
        assert_eq!(rsp.status, 400, "{}", rsp.text);
        assert_free_of(&rsp.text, &[NILS], "the filter problem");
        let all = a.get("/v1/audit/records?limit=1000").await;
        assert_eq!(all.status, 200);
        assert_free_of(&all.text, &[NILS], "the audit-query records");
        assert_logs_clean(&[NILS]);
    }
);

// Second review (helper attack): the consent claims' shape error kept
// serde's raw path, so an unknown `given_by` key came back as sent.
both_backends!(
    a_consent_claims_key_that_is_a_personnummer_is_not_echoed,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let key = samgate::consent::token::SigningKeyFile::load(
            &gw.path("keys/issuer-sfk-kalmar-intake.pem"),
        )
        .unwrap();
        let t = now();
        let claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "iss": "sfk-kalmar-intake",
            "sub": ALVA,
            "nbf": t,
            "exp": t + 86_400,
            "parties": ["fk", "af"],
            "purposes": ["samordnad-rehabilitering"],
            "categories": ["case"],
            "method": "written",
            "recorded_by": "handlaggare.eva",
            "given_by": {"role": "guardian", "name": "Karin", NILS: 1},
        });
        let token = key.sign("2026-1", &claims).unwrap();
        let rsp = gw.submit_consent(&token).await;
        assert_eq!(rsp.status, 422, "{}", rsp.text);
        assert_eq!(rsp.problem(), "invalid_consent_claims");
        assert_free_of(&rsp.text, &[NILS, ALVA], "the claims problem");
        assert!(rsp.text.contains("given_by.(not shown)"), "{}", rsp.text);
    }
);
