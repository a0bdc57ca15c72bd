//! Consent and exchange, end to end against real recipients.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{
    assert_free_of, assert_logs_clean, attendance, consent_args, consent_to_all, count, envelope,
    example, fast_retries, now, record_consent, record_signed, valid_number, Db, Reply,
    TestGateway, ALL_CATEGORIES, ALL_PARTIES, ALVA, NILS,
};

both_backends!(
    attendance_report_is_delivered_with_exactly_the_allowed_fields,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        let mut msg = attendance("20020314-9828");
        msg["payload"]["scheduled_hours"] = json!(36);
        let rsp = gw.client("af").post_exchange(&msg).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let body = rsp.json();
        assert_eq!(body["status"], "delivered");
        assert_eq!(
            body["forwarded"],
            json!(["/absence_reason_category", "/attended_hours", "/period"])
        );
        assert_eq!(body["withheld"], json!(["/scheduled_hours"]));
        let got = gw.recipient("fk").received();
        assert_eq!(got.len(), 1);
        let m = got[0].json();
        assert_eq!(
            m["payload"],
            json!({"period": {"start": "2025-11-01", "end": "2025-11-30"}, "attended_hours": 27, "absence_reason_category": "sick"})
        );
        assert_eq!(m["subject"], json!({"personnummer": ALVA}));
        assert_eq!(m["from"], "af");
        assert_eq!(m["exchange_id"], body["exchange_id"]);
        assert_eq!(
            got[0].headers["samgate-exchange-id"].to_str().unwrap(),
            body["exchange_id"].as_str().unwrap()
        );

        // The signature verifies over the received bytes with the published key.
        let keys = gw.client("fk").get("/v1/keys").await.json();
        let sig = got[0].headers["samgate-signature"]
            .to_str()
            .unwrap()
            .to_owned();
        let header: Value = {
            use base64::Engine;
            let h = sig.split('.').next().unwrap();
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .unwrap(),
            )
            .unwrap()
        };
        let jwk = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == header["kid"])
            .unwrap();
        let x = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
        };
        let pk: [u8; 32] = x.try_into().unwrap();
        assert!(samgate::exchange::deliver::verify_detached(
            &pk,
            &sig,
            &got[0].body
        ));
        let mut tampered = got[0].body.to_vec();
        tampered[10] ^= 1;
        assert!(!samgate::exchange::deliver::verify_detached(
            &pk, &sig, &tampered
        ));

        let forwarded = count(gw.pool(), "SELECT COUNT(*) FROM audit_records WHERE action IN ('exchange-forwarded','exchange-delivered')").await;
        assert_eq!(forwarded, 2);
        assert_logs_clean(&[ALVA]);
    }
);

both_backends!(
    pseudonymised_route_gives_each_recipient_its_own_pseudonym,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        let msg = envelope(
            "region-kalmar",
            "rehabilitation-plan",
            ALVA,
            example("rehabilitation-plan"),
        );
        let rsp = gw.client("kommun-kalmar").post_exchange(&msg).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let got = gw.recipient("region-kalmar").received();
        let m = got[0].json();
        let ps = m["subject"]["pseudonym"].as_str().unwrap().to_owned();
        assert!(ps.starts_with("ps1_"));
        let text = String::from_utf8_lossy(&got[0].body).to_string();
        assert_free_of(&text, &[ALVA], "what the recipient saw");
        // The same person in another recipient's domain is a different pseudonym.
        let p = gw.personnummer(ALVA);
        let other = gw.state().crypto.pseudonym("fk", &p).unwrap();
        assert_ne!(other.as_str(), ps);
        assert_eq!(
            gw.state()
                .crypto
                .pseudonym("region-kalmar", &p)
                .unwrap()
                .as_str(),
            ps
        );
    }
);

both_backends!(exchange_is_denied_after_revocation, |db| async move {
    let gw = TestGateway::spawn(db).await;
    let id = consent_to_all(&gw, NILS).await;
    let rsp = gw.client("af").post_exchange(&attendance(NILS)).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);
    let rev = gw.revoke(&id, &json!({"reason": "wants out"})).await;
    assert_eq!(rev.status, 200, "{}", rev.text);
    assert_eq!(rev.json()["state"], "revoked");
    let again = gw.revoke(&id, &json!({})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["revoked_at"], rev.json()["revoked_at"]);
    let rsp = gw.client("af").post_exchange(&attendance(NILS)).await;
    assert_eq!(rsp.problem_code(), (403, "consent_revoked"));
    // Only the one data delivery (the revocation notice, DESIGN §13, may
    // also have arrived by now).
    let data = gw
        .recipient("fk")
        .received()
        .iter()
        .filter(|r| r.json()["type"] != "consent-revoked")
        .count();
    assert_eq!(data, 1);
    assert_eq!(gw.count_records("exchange-denied").await, 1);
});

both_backends!(
    every_refusal_is_audited_and_nothing_reaches_the_recipient,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let af = gw.client("af");
        let mut expected = 0;
        let mut check = |status: u16, code: &str, rsp: crate::harness::Rsp| {
            assert_eq!(rsp.status, status, "{code}: {}", rsp.text);
            assert_eq!(rsp.problem(), code);
            expected += 1;
        };
        // consent missing
        check(
            403,
            "consent_missing",
            af.post_exchange(&attendance(ALVA)).await,
        );
        // consent out of scope: does not name af
        record_consent(&gw, ALVA, &["fk", "kommun-kalmar"], ALL_CATEGORIES).await;
        check(
            403,
            "consent_scope",
            af.post_exchange(&attendance(ALVA)).await,
        );
        // categories: a consent covering none of the route's fields
        record_consent(&gw, NILS, ALL_PARTIES, &["health"]).await;
        check(
            403,
            "consent_scope",
            af.post_exchange(&attendance(NILS)).await,
        );
        // no route
        let mut m = attendance(ALVA);
        m["to"] = json!("region-kalmar");
        check(403, "route_not_allowed", af.post_exchange(&m).await);
        // unknown party / type
        let mut m = attendance(ALVA);
        m["to"] = json!("skatteverket");
        check(422, "unknown_party", af.post_exchange(&m).await);
        let mut m = attendance(ALVA);
        m["type"] = json!("tax-return");
        check(422, "unknown_type", af.post_exchange(&m).await);
        // schema violation names the path, never the value
        let mut m = attendance(ALVA);
        m["payload"]["attended_hours"] = json!("many");
        let rsp = af.post_exchange(&m).await;
        assert_eq!(rsp.json()["errors"], json!(["/attended_hours"]));
        assert!(!rsp.text.contains("many"));
        check(422, "schema_violation", rsp);
        // invalid personnummer, not echoed
        let rsp = af.post_exchange(&attendance("200203149829")).await;
        assert!(!rsp.text.contains("200203149829"));
        check(422, "invalid_personnummer", rsp);
        // malformed JSON, wrong envelope, oversized, wrong media type
        check(
            400,
            "malformed_json",
            af.post_raw("/v1/exchanges", "application/json", b"{\"to\": ".to_vec())
                .await,
        );
        check(
            400,
            "invalid_envelope",
            af.post_exchange(&json!({"to": 5})).await,
        );
        check(
            413,
            "payload_too_large",
            af.post_raw(
                "/v1/exchanges",
                "application/json",
                vec![b' '; 1024 * 1024 + 10],
            )
            .await,
        );
        check(
            415,
            "unsupported_media_type",
            af.post_raw("/v1/exchanges", "text/plain", b"{}".to_vec())
                .await,
        );
        // a party without the agency role
        let rsp = gw.auditor().post_exchange(&attendance(ALVA)).await;
        assert_eq!(rsp.problem_code(), (403, "forbidden_role"));

        for r in gw.recipients.values() {
            assert!(r.received().is_empty());
        }
        assert_eq!(gw.count_records("exchange-denied").await, expected);
        assert_logs_clean(&[ALVA, NILS]);
    }
);

both_backends!(
    async_exchange_is_delivered_exactly_once_after_recipient_failures,
    |db| async move {
        let gw = TestGateway::spawn_with(db, fast_retries).await;
        consent_to_all(&gw, ALVA).await;
        let fk = gw.recipient("fk");
        fk.push_reply(Reply::status(503));
        fk.push_reply(Reply::status(500));
        let mut msg = attendance(ALVA);
        msg["delivery"] = json!("async");
        let rsp = gw.client("af").post_exchange(&msg).await;
        assert_eq!(rsp.status, 202, "{}", rsp.text);
        let id = rsp.exchange_id();
        let status = gw
            .client("af")
            .wait_for_exchange(&id, |s| s["status"] == "delivered")
            .await;
        assert_eq!(status["status"], "delivered", "{status}");
        assert_eq!(status["attempts"], 3);
        assert_eq!(fk.received().len(), 1);
        // Another party cannot read it.
        let other = gw
            .client("kommun-kalmar")
            .get(&format!("/v1/exchanges/{id}"))
            .await;
        assert_eq!(other.status, 404);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_exchange_survives_a_restart_before_delivery() {
    let mut gw = TestGateway::spawn_with_consent(Db::Sqlite, ALVA).await;
    // The recipient refuses until the gateway has been restarted.
    gw.recipient("fk").set_default_reply(Reply::status(503));
    let mut msg = attendance(ALVA);
    msg["delivery"] = json!("async");
    let rsp = gw.client("af").post_exchange(&msg).await;
    assert_eq!(rsp.status, 202);
    let id = rsp.exchange_id();
    gw.gw.take().unwrap().abort();
    gw.recipient("fk").set_default_reply(Reply::default());
    let state = samgate::state::AppState::build(gw.config.clone())
        .await
        .unwrap();
    // Make the retry due now: the crash left a lease and a backoff behind.
    sqlx::query("UPDATE outbox SET next_attempt_us = 0, claimed_until_us = 0")
        .execute(state.store.pool())
        .await
        .unwrap();
    gw.gw = Some(samgate::http::server::Gateway::start(state).await.unwrap());
    let status = gw
        .client("af")
        .wait_for_exchange(&id, |s| s["status"] == "delivered")
        .await;
    assert_eq!(status["status"], "delivered");
    assert_eq!(gw.recipient("fk").received().len(), 1);
}

both_backends!(
    idempotency_key_returns_the_first_result_and_sends_once,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        let af = gw.client("af");
        let msg = attendance(ALVA);
        let a = af
            .post_exchange_with(&msg, &[("Idempotency-Key", "k-1")])
            .await;
        let b = af
            .post_exchange_with(&msg, &[("Idempotency-Key", "k-1")])
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(b.status, 200);
        assert_eq!(a.json()["exchange_id"], b.json()["exchange_id"]);
        assert_eq!(gw.recipient("fk").received().len(), 1);
        let mut other = msg.clone();
        other["payload"]["attended_hours"] = json!(30);
        let c = af
            .post_exchange_with(&other, &[("Idempotency-Key", "k-1")])
            .await;
        assert_eq!(c.problem_code(), (409, "idempotency_conflict"));
        // The same key from another party is its own key.
        let d = gw
            .client("kommun-kalmar")
            .post_exchange_with(
                &envelope(
                    "fk",
                    "attendance-report",
                    ALVA,
                    example("attendance-report"),
                ),
                &[("Idempotency-Key", "k-1")],
            )
            .await;
        assert_eq!(d.status, 200, "{}", d.text);
    }
);

both_backends!(
    a_reply_goes_back_through_the_reverse_route,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        gw.recipient("sfk-kalmar").push_reply(Reply::json(json!({"type": "referral", "payload": {"referral_id": "R-2026-17", "decision": "accepted", "suggested_measure": "group-activity", "health_summary": "not for the sender"}})));
        let msg = envelope("sfk-kalmar", "referral", ALVA, example("referral"));
        let rsp = gw.client("fk").post_exchange(&msg).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let reply = &rsp.json()["reply"];
        assert_eq!(reply["type"], "referral");
        assert_eq!(reply["payload"]["decision"], "accepted");
        assert!(reply["payload"].get("health_summary").is_none());
        assert!(reply["withheld"]
            .as_array()
            .unwrap()
            .contains(&json!("/health_summary")));

        // A reply type with no reverse route is withheld.
        gw.recipient("fk").push_reply(Reply::json(json!({"type": "closure", "payload": {"closure_date": "2026-01-01", "outcome": "work"}})));
        let rsp = gw.client("af").post_exchange(&attendance(ALVA)).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_eq!(rsp.json()["reply"], Value::Null);
        assert_eq!(rsp.json()["reply_withheld"], true);
    }
);

both_backends!(
    a_failing_recipient_gives_502_and_a_failed_exchange,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        gw.recipient("fk").push_reply(Reply::status(500));
        let rsp = gw.client("af").post_exchange(&attendance(ALVA)).await;
        assert_eq!(rsp.problem_code(), (502, "recipient_failed"));
        let id = rsp.exchange_id();
        let st = gw.client("af").exchange_status(&id).await;
        assert_eq!(st["status"], "failed");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personnummer_rests_in_clear_in_the_sqlite_file() {
    let mut gw = TestGateway::spawn_with_consent(Db::Sqlite, ALVA).await;
    let id = consent_to_all(&gw, NILS).await;
    // Caller-chosen strings and a reply that hold numbers (DESIGN §10).
    gw.recipient("fk").push_reply(Reply::json(
        json!({"type": format!("t {NILS}"), "payload": {"n": ALVA}}),
    ));
    gw.client("af")
        .post_exchange_with(
            &attendance(ALVA),
            &[
                ("X-Request-Id", "pnr-20020314-9828"),
                ("Idempotency-Key", "20001102-9915"),
            ],
        )
        .await;
    let mut m = attendance(NILS);
    m["delivery"] = json!("async");
    gw.recipient("fk").set_default_reply(Reply::status(503));
    gw.client("af").post_exchange(&m).await;
    gw.revoke(&id, &json!({})).await;
    let bytes = gw.sqlite_bytes().await;
    assert!(bytes.len() > 10_000);
    let text = String::from_utf8_lossy(&bytes);
    assert_free_of(&text, &[ALVA, NILS], "the database file");
}

both_backends!(an_expired_consent_gives_consent_expired, |db| async move {
    let clock = samgate::clock::OffsetClock::new();
    let gw = TestGateway::spawn_clocked(db, clock.clone()).await;
    let mut args = consent_args(&gw, ALVA, ALL_PARTIES, ALL_CATEGORIES);
    args.days = 30;
    let summary = record_signed(&gw, &args, now()).await;
    let id = summary["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gw.client("af")
            .post_exchange(&attendance(ALVA))
            .await
            .status,
        200
    );
    clock.advance_secs(31 * 86_400);
    let rsp = gw.client("af").post_exchange(&attendance(ALVA)).await;
    assert_eq!(rsp.problem_code(), (403, "consent_expired"));
    let summary = gw.consent(&id).await;
    assert_eq!(summary["state"], "expired");
    assert_eq!(gw.recipient("fk").received().len(), 1);
});

both_backends!(
    a_subject_is_judged_on_the_gateway_clocks_date,
    |db| async move {
        // The gateway's clock runs 30 days behind the wall clock.
        let clock = samgate::clock::OffsetClock::new();
        clock.advance_secs(-30 * 86_400);
        let gw = TestGateway::spawn_clocked(db, clock.clone()).await;
        // Born 10 days ago by the wall clock: not yet born by the gateway's.
        let born = time::OffsetDateTime::from_unix_timestamp(now() - 10 * 86_400)
            .unwrap()
            .date();
        let number = valid_number(
            born.year(),
            u32::from(u8::from(born.month())),
            u32::from(born.day()),
            123,
            false,
        );
        let rsp = gw.client("af").post_exchange(&attendance(&number)).await;
        assert_eq!(rsp.problem_code(), (422, "invalid_personnummer"));
        // Once the gateway's clock has reached that birth date the number is
        // valid, and the exchange goes on to the consent check.
        clock.advance_secs(30 * 86_400);
        let rsp = gw.client("af").post_exchange(&attendance(&number)).await;
        assert_eq!(rsp.problem_code(), (403, "consent_missing"));
    }
);

both_backends!(
    a_consent_starting_beyond_the_leeway_is_refused,
    |db| async move {
        let clock = samgate::clock::OffsetClock::new();
        let gw = TestGateway::spawn_clocked(db, clock.clone()).await;
        // Recorded "yesterday" by the gateway's clock, valid from the real now.
        clock.advance_secs(-3600);
        let token = samgate::consent::cli::sign_consent(
            &consent_args(&gw, ALVA, ALL_PARTIES, ALL_CATEGORIES),
            now(),
        )
        .unwrap();
        let rsp = gw.submit_consent(&token).await;
        // More than the 60 s leeway before nbf (DESIGN §9): 422.
        assert_eq!(rsp.problem_code(), (422, "invalid_consent_claims"));
    }
);

both_backends!(
    a_disclosure_extract_lists_only_that_participants_exchanges,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        consent_to_all(&gw, NILS).await;
        let af = gw.client("af");
        assert_eq!(af.post_exchange(&attendance(ALVA)).await.status, 200);
        assert_eq!(af.post_exchange(&attendance(NILS)).await.status, 200);
        let mut denied = attendance(ALVA);
        denied["to"] = json!("region-kalmar");
        assert_eq!(af.post_exchange(&denied).await.status, 403);

        let rsp = gw.client("sfk-kalmar").disclosures("20020314-9828").await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_free_of(&rsp.text, &[ALVA, NILS], "the extract");
        let body = rsp.json();
        let list = body["disclosures"].as_array().unwrap();
        let alva_audit = gw.audit_pseudonym(ALVA);
        assert_eq!(body["subject"], json!(alva_audit));
        // One item per exchange (DESIGN §10): the delivered attendance
        // report and the denial.
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list
            .iter()
            .any(|d| d["to"] == "fk" && d["decision"] == "delivered"));
        assert!(list
            .iter()
            .any(|d| d["decision"] == "deny" && d["to"] == "region-kalmar"));
        assert!(list.iter().any(|d| d["to"] == "fk"
            && d["forwarded"]
                == json!(["/absence_reason_category", "/attended_hours", "/period"])));
        let times: Vec<&str> = list.iter().map(|d| d["time"].as_str().unwrap()).collect();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted, "not newest first");
        // Nils's exchange is not in Alva's extract.
        let nils_audit = gw.audit_pseudonym(NILS);
        let nils_ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM exchanges WHERE subject = $1")
                .bind(nils_audit)
                .fetch_all(gw.pool())
                .await
                .unwrap();
        assert_eq!(nils_ids.len(), 1);
        let alva_ids: BTreeSet<String> = list
            .iter()
            .map(|d| d["exchange_id"].as_str().unwrap().to_owned())
            .collect();
        assert!(!alva_ids.contains(&nils_ids[0]));
        let rsp = gw.client("af").disclosures(ALVA).await;
        assert_eq!(rsp.problem_code(), (403, "forbidden_role"));
    }
);

both_backends!(
    a_payload_naming_another_person_than_the_subject_is_refused,
    |db| async move {
        let gw = TestGateway::spawn_with_consent(db, ALVA).await;
        let mut payload = example("referral");
        payload["subject"] = json!(NILS);
        let msg = envelope("sfk-kalmar", "referral", ALVA, payload);
        let rsp = gw.client("fk").post_exchange(&msg).await;
        assert_eq!(rsp.problem_code(), (422, "invalid_personnummer"));
        assert_eq!(rsp.json()["errors"], json!(["/subject"]));
        assert_free_of(&rsp.text, &[NILS], "the answer");
        assert!(gw.recipient("sfk-kalmar").received().is_empty());
    }
);

both_backends!(
    a_reply_can_only_re_identify_the_exchanges_own_subject,
    |db| async move {
        use crate::harness::route;
        let gw = TestGateway::spawn_with(db, |c| {
            c.routes.push(route(
                "fk",
                &["region-kalmar"],
                "referral",
                &["/subject", "/referral_id"],
                samgate::policy::SubjectMode::Pseudonymise,
            ));
            c.routes.push(route(
                "region-kalmar",
                &["fk"],
                "referral",
                &["/subject", "/decision"],
                samgate::policy::SubjectMode::Reveal,
            ));
        })
        .await;
        consent_to_all(&gw, ALVA).await;
        consent_to_all(&gw, NILS).await;
        let referral = |who: &str| {
            json!({"to": "region-kalmar", "type": "referral", "purpose": "samordnad-rehabilitering",
        "subject": who, "payload": {"referral_id": "R-1", "subject": who}})
        };
        // Nils's referral gives the region his pseudonym in its domain.
        assert_eq!(
            gw.client("fk").post_exchange(&referral(NILS)).await.status,
            200
        );
        let nils_ps = gw.recipient("region-kalmar").received()[0].json()["payload"]["subject"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(nils_ps.starts_with("ps1_"));

        // A reply about Alva that smuggles Nils's pseudonym: the field is removed.
        gw.recipient("region-kalmar").push_reply(Reply::json(
            json!({"type": "referral", "payload": {"subject": nils_ps, "decision": "accepted"}}),
        ));
        let rsp = gw.client("fk").post_exchange(&referral(ALVA)).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let reply = &rsp.json()["reply"];
        assert_eq!(reply["payload"], json!({"decision": "accepted"}));
        // Another participant is not re-identified.
        assert_free_of(&rsp.text, &[NILS], "the reply");

        // Alva's own pseudonym is resolved, and that is an audit record.
        let alva_ps = gw.recipient("region-kalmar").received()[1].json()["payload"]["subject"]
            .as_str()
            .unwrap()
            .to_owned();
        gw.recipient("region-kalmar").push_reply(Reply::json(
            json!({"type": "referral", "payload": {"subject": alva_ps, "decision": "accepted"}}),
        ));
        let rsp = gw.client("fk").post_exchange(&referral(ALVA)).await;
        assert_eq!(rsp.json()["reply"]["payload"]["subject"], json!(ALVA));
        let n = count(
            gw.pool(),
            "SELECT COUNT(*) FROM audit_records WHERE action = 'reidentified'",
        )
        .await;
        assert_eq!(n, 1);
    }
);

both_backends!(
    a_denied_exchange_has_an_id_the_sender_can_look_up,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let rsp = gw.client("af").post_exchange(&attendance(ALVA)).await;
        assert_eq!(rsp.problem_code(), (403, "consent_missing"));
        let id = rsp.exchange_id();
        let st = gw.client("af").exchange_status(&id).await;
        assert_eq!(st["status"], "denied");
        assert_eq!(st["last_error"], "consent_missing");
        // The audit record's payload digest is keyed: not the plain SHA-256 of the body.
        let leaf: Vec<u8> =
            sqlx::query_scalar("SELECT leaf FROM audit_records WHERE exchange_id = $1")
                .bind(id)
                .fetch_one(gw.pool())
                .await
                .unwrap();
        let record: Value = serde_json::from_slice(&leaf).unwrap();
        let body = serde_json::to_vec(&attendance(ALVA)).unwrap();
        let plain = hex::encode(ring::digest::digest(&ring::digest::SHA256, &body));
        assert_eq!(record["payload_sha256"].as_str().unwrap().len(), 64);
        assert_ne!(record["payload_sha256"].as_str().unwrap(), plain);
    }
);
