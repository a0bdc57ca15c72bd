//! The consent lifecycle (DESIGN §13), end to end: a representative's
//! consent, protected identity, closure and follow-up, revocation notices
//! through the outbox, and the receipt of each state.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{
    consent_args, consent_to_all, envelope, example, fast_retries, now, record_signed, route,
    Reply, TestGateway, ALL_CATEGORIES as ALL, ALL_PARTIES as PARTIES, ALVA, BERIT,
};
use samgate::policy::SubjectMode;

async fn record(gw: &TestGateway, args: &samgate::cli::ConsentSignArgs) -> Value {
    record_signed(gw, args, now()).await
}

async fn receipt(gw: &TestGateway, id: &str) -> Value {
    let rsp = gw
        .client("sfk-kalmar")
        .get(&format!("/v1/consents/{id}/receipt"))
        .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);
    rsp.json()
}

fn events(v: &Value) -> Vec<String> {
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

/// A sync exchange for samordnad-rehabilitering.
fn send(to: &str, ty: &str, subject: &str, payload: Value) -> Value {
    let mut m = envelope(to, ty, subject, payload);
    m["delivery"] = json!("sync");
    m
}

both_backends!(a_guardians_consent_is_recorded_and_shown, |db| async move {
    let gw = TestGateway::spawn(db).await;
    let mut args = consent_args(&gw, ALVA, PARTIES, &["case", "attendance"]);
    args.given_by = Some("guardian:Karin Exempeldotter".into());
    let summary = record(&gw, &args).await;
    assert_eq!(
        summary["given_by"],
        json!({"role": "guardian", "name": "Karin Exempeldotter"})
    );
    assert_eq!(summary["protected_identity"], false);
    assert_eq!(events(&summary), ["recorded"]);
    let id = summary["id"].as_str().unwrap();
    let got = gw.consent(id).await;
    assert_eq!(got["given_by"]["role"], "guardian");
    assert_eq!(got["given_by"]["name"], "Karin Exempeldotter");
    let r = receipt(&gw, id).await;
    assert_eq!(r["given_by"]["role"], "guardian");
    assert_eq!(r["given_by"]["name"], "Karin Exempeldotter");
    assert_eq!(r["given_by"]["dpv"], "dpv:Representative");
    assert_eq!(r["recorded_by"], "handlaggare.eva");
    assert_eq!(r["method"], "written");
    // The name is sealed at rest: not in the consents table in clear.
    let stored: Option<String> =
        sqlx::query_scalar("SELECT given_by_name FROM consents WHERE id = $1")
            .bind(id.to_owned())
            .fetch_one(gw.pool())
            .await
            .unwrap();
    assert!(!stored.unwrap().contains("Karin"));

    // A bad role is 422 invalid_consent_claims (signed by hand: the CLI
    // refuses it before signing).
    let key = samgate::consent::token::SigningKeyFile::load(&args.key).unwrap();
    let n = now();
    let claims = json!({"jti": uuid::Uuid::new_v4().to_string(), "iss": "sfk-kalmar-intake", "sub": ALVA,
        "aud": "samgate", "iat": n, "nbf": n, "exp": n + 86_400, "parties": ["fk", "af"],
        "purposes": ["samordnad-rehabilitering"], "categories": ["case"], "method": "written",
        "recorded_by": "handlaggare.eva", "given_by": {"role": "uncle", "name": "Nisse"}});
    let bad = key.sign("2026-1", &claims).unwrap();
    let rsp = gw.submit_consent(&bad).await;
    assert_eq!(rsp.problem_code(), (422, "invalid_consent_claims"));
    assert!(samgate::consent::cli::parse_given_by("uncle:Nisse").is_err());
});

both_backends!(
    a_protected_participants_referral_carries_no_contact_field_to_any_recipient,
    |db| async move {
        // A route listing "*" to every other agency, pseudonymised.
        let gw = TestGateway::spawn_with(db, |c| {
            c.routes.push(route(
                "fk",
                &["af", "kommun-kalmar", "region-kalmar"],
                "referral",
                &["*"],
                SubjectMode::Pseudonymise,
            ));
        })
        .await;
        let mut args = consent_args(&gw, BERIT, PARTIES, ALL);
        args.protected_identity = true;
        let summary = record(&gw, &args).await;
        assert_eq!(summary["protected_identity"], true);
        let mut payload = example("referral");
        payload["subject"] = json!(BERIT);
        payload.as_object_mut().unwrap().remove("decision");
        payload.as_object_mut().unwrap().remove("suggested_measure");
        let contact = ["/address", "/municipality", "/phone"];
        for to in ["sfk-kalmar", "af", "kommun-kalmar", "region-kalmar"] {
            let rsp = gw
                .client("fk")
                .post_exchange(&send(to, "referral", BERIT, payload.clone()))
                .await;
            assert_eq!(rsp.status, 200, "{to}: {}", rsp.text);
            let withheld = rsp.json()["withheld"].clone();
            for c in contact {
                assert!(
                    withheld.as_array().unwrap().contains(&json!(c)),
                    "{to}: {c}"
                );
            }
            let got = gw.recipient(to).received().last().unwrap().json();
            assert_eq!(got["protected_identity"], true, "{to}");
            let fields: BTreeSet<&String> = got["payload"].as_object().unwrap().keys().collect();
            for c in ["address", "municipality", "phone"] {
                assert!(!fields.contains(&c.to_owned()), "{to} got {c}");
            }
            assert!(fields.contains(&"income_source".to_owned()), "{to}");
        }
        // The audit records say why, and the receipt holds nothing of contact.
        let reasons: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT msg_type FROM audit_records WHERE action = 'exchange-forwarded'",
        )
        .fetch_all(gw.pool())
        .await
        .unwrap();
        assert_eq!(reasons.len(), 4);
        let r = receipt(&gw, summary["id"].as_str().unwrap()).await;
        assert_eq!(r["protected_identity"], true);
        assert!(!r.to_string().contains("contact"), "{r}");
        // The register extract lists no contact field either.
        let ext = gw.client("sfk-kalmar").disclosures(BERIT).await;
        assert_eq!(ext.status, 200, "{}", ext.text);
        let items = ext.json()["disclosures"].as_array().unwrap().clone();
        assert!(items.len() >= 4);
        for item in items {
            for c in contact {
                assert!(
                    !item["forwarded"].as_array().unwrap().contains(&json!(c)),
                    "{item}"
                );
            }
        }
        // A participant without the marking still gets contact forwarded.
        record(&gw, &consent_args(&gw, ALVA, PARTIES, ALL)).await;
        payload["subject"] = json!(ALVA);
        let rsp = gw
            .client("fk")
            .post_exchange(&send("af", "referral", ALVA, payload))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let got = gw.recipient("af").received().last().unwrap().json();
        assert!(got["payload"].get("phone").is_some());
        assert!(got.get("protected_identity").is_none());
    }
);

both_backends!(
    after_a_closure_only_follow_up_passes_until_follow_up_months,
    |db| async move {
        let clock = samgate::clock::OffsetClock::new();
        let gw = TestGateway::spawn_clocked(db, clock.clone()).await;
        let mut args = consent_args(&gw, ALVA, PARTIES, ALL);
        args.days = 700;
        let summary = record(&gw, &args).await;
        let id = summary["id"].as_str().unwrap().to_owned();
        let kommun = gw.client("kommun-kalmar");
        let attendance = || {
            send(
                "fk",
                "attendance-report",
                ALVA,
                example("attendance-report"),
            )
        };
        assert_eq!(kommun.post_exchange(&attendance()).await.status, 200);
        let rsp = kommun
            .post_exchange(&send("fk", "closure", ALVA, example("closure")))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let closure_id = rsp.exchange_id();
        // The other receiving parties can still be told of the closure.
        let rsp = kommun
            .post_exchange(&send("af", "closure", ALVA, example("closure")))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let rsp = kommun.post_exchange(&attendance()).await;
        assert_eq!(rsp.problem_code(), (403, "consent_scope"));
        let mut follow_up = send("fk", "follow-up", ALVA, example("follow-up"));
        follow_up["purpose"] = json!("uppfoljning");
        let rsp = kommun.post_exchange(&follow_up).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);

        let s = gw.consent(&id).await;
        assert_eq!(s["state"], "closed");
        assert_eq!(events(&s), ["recorded", "closure"]);
        assert_eq!(s["closure"]["exchange_id"], closure_id.as_str());
        assert_eq!(s["history"][1]["exchange_id"], closure_id.as_str());
        let closed_at = s["closure"]["closed_at"].as_str().unwrap();
        let until = s["closure"]["follow_up_until"].as_str().unwrap();
        // Twelve calendar months later (the default follow_up_months).
        let year: i32 = closed_at[..4].parse().unwrap();
        assert_eq!(&until[..4], (year + 1).to_string());
        assert_eq!(&until[4..], &closed_at[4..]);
        assert_eq!(s["expires_at"], until);
        let r = receipt(&gw, &id).await;
        assert_eq!(r["state"], "closed");
        assert_eq!(r["consent_status"], "dpv:ConsentGiven");
        assert_eq!(r["validity"]["valid_until"], until);
        let purposes = r["purposes"].as_array().unwrap();
        assert!(purposes.contains(&json!({"purpose": "uppfoljning", "in_force": true})));
        assert!(purposes.contains(
            &json!({"purpose": "samordnad-rehabilitering", "in_force": false, "ended_by": "closure"})
        ));

        // Past follow_up_months: expired, and follow-up is refused too.
        clock.advance_secs(367 * 86_400);
        let rsp = kommun.post_exchange(&follow_up).await;
        assert_eq!(rsp.problem_code(), (403, "consent_expired"));
        let s = gw.consent(&id).await;
        assert_eq!(s["state"], "expired");
        assert_eq!(events(&s), ["recorded", "closure", "expired"]);
        assert_eq!(s["history"][2]["time"], until);
        let r = receipt(&gw, &id).await;
        assert_eq!(r["state"], "expired");
        assert_eq!(r["consent_status"], "dpv:ConsentExpired");
        assert_eq!(r["history"][2]["event_state"], "dpv:ConsentExpired");
        assert_eq!(r["purposes"][0]["in_force"], false);
    }
);

/// Waits until `f` holds (the outbox delivers in the background).
async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(f(), "condition not reached");
}

fn notices(gw: &TestGateway, party: &str) -> Vec<Value> {
    gw.recipient(party)
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|v| v["type"] == "consent-revoked")
        .collect()
}

both_backends!(
    a_revocation_notifies_each_recipient_once_with_exactly_its_exchanges,
    |db| async move {
        let gw = TestGateway::spawn_with(db, fast_retries).await;
        let id = consent_to_all(&gw, ALVA).await;
        // Another consent of another participant: none of its exchanges count.
        record(&gw, &consent_args(&gw, BERIT, PARTIES, ALL)).await;
        let kommun = gw.client("kommun-kalmar");
        let ids = |rsp: crate::harness::Rsp| {
            assert_eq!(rsp.status, 200, "{}", rsp.text);
            rsp.exchange_id()
        };
        let att = |who: &str| send("fk", "attendance-report", who, example("attendance-report"));
        // Three deliveries to two recipients: fk twice (revealed), the
        // region once (pseudonymised).
        let fk1 = ids(kommun.post_exchange(&att(ALVA)).await);
        let fk2 = ids(gw.client("af").post_exchange(&att(ALVA)).await);
        let region = ids(kommun
            .post_exchange(&send(
                "region-kalmar",
                "rehabilitation-plan",
                ALVA,
                example("rehabilitation-plan"),
            ))
            .await);
        ids(kommun.post_exchange(&att(BERIT)).await);
        // A refused one was never received.
        let rsp = gw
            .client("af")
            .post_exchange(&send(
                "region-kalmar",
                "medical-certificate",
                ALVA,
                example("medical-certificate"),
            ))
            .await;
        assert_eq!(rsp.status, 403);
        let region_got = gw.recipient("region-kalmar").received()[0].json();

        // The region is down when the participant withdraws.
        gw.recipient("region-kalmar").set_down(true);
        let rsp = gw.revoke(&id, &json!({})).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let revoked_at = rsp.json()["revoked_at"].as_str().unwrap().to_owned();
        assert_eq!(events(&rsp.json()), ["recorded", "revoked"]);

        eventually(|| !notices(&gw, "fk").is_empty()).await;
        let fk_notice = &notices(&gw, "fk")[0];
        assert_eq!(fk_notice["consent_id"], id.as_str());
        assert_eq!(fk_notice["subject"], json!({"personnummer": ALVA}));
        assert_eq!(fk_notice["revoked_at"], revoked_at.as_str());
        assert_eq!(fk_notice["from"], "samgate");
        let mut want = vec![fk1.clone(), fk2.clone()];
        want.sort();
        assert_eq!(fk_notice["exchange_ids"], json!(want));
        // Signed like any delivery, with its own id in the header.
        let fk_raw = gw
            .recipient("fk")
            .received()
            .into_iter()
            .find(|r| r.json()["type"] == "consent-revoked")
            .unwrap();
        let pubkey = gw.state().crypto.delivery_signer.public_key();
        let sig = fk_raw.headers["samgate-signature"].to_str().unwrap();
        assert!(samgate::exchange::deliver::verify_detached(
            &pubkey,
            sig,
            &fk_raw.body
        ));
        assert_eq!(
            fk_raw.headers["samgate-exchange-id"].to_str().unwrap(),
            fk_notice["exchange_id"].as_str().unwrap()
        );
        assert!(notices(&gw, "region-kalmar").is_empty());

        // The region comes back and gets its notice, in its own form.
        gw.recipient("region-kalmar").set_down(false);
        eventually(|| !notices(&gw, "region-kalmar").is_empty()).await;
        let rn = &notices(&gw, "region-kalmar")[0];
        assert_eq!(rn["exchange_ids"], json!([region]));
        assert_eq!(rn["consent_id"], region_got["consent_id"]);
        assert!(rn["consent_id"].as_str().unwrap().starts_with("pc1_"));
        assert_eq!(rn["subject"], region_got["subject"]);
        assert!(rn["subject"]["pseudonym"]
            .as_str()
            .unwrap()
            .starts_with("ps1_"));
        assert!(!rn.to_string().contains(ALVA));

        // Exactly one each; no notice to a party that received nothing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(notices(&gw, "fk").len(), 1);
        assert_eq!(notices(&gw, "region-kalmar").len(), 1);
        assert!(notices(&gw, "af").is_empty());
        assert!(notices(&gw, "sfk-kalmar").is_empty());
        let notified: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_records WHERE action = 'revocation-notified' AND consent_id = $1",
        )
        .bind(id.clone())
        .fetch_one(gw.pool())
        .await
        .unwrap();
        assert_eq!(notified, 2);
        // Revoking again sends nothing more.
        gw.revoke(&id, &json!({})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(notices(&gw, "fk").len(), 1);

        let r = receipt(&gw, &id).await;
        assert_eq!(r["state"], "revoked");
        assert_eq!(r["consent_status"], "dpv:ConsentWithdrawn");
        assert_eq!(r["history"][1]["event"], "revoked");
        assert_eq!(r["history"][1]["event_state"], "dpv:ConsentWithdrawn");
        assert_eq!(r["history"][1]["time"], revoked_at.as_str());
    }
);

both_backends!(
    the_receipt_of_an_active_consent_field_by_field,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let summary = record(
            &gw,
            &consent_args(&gw, ALVA, &["fk", "af"], &["case", "health"]),
        )
        .await;
        let id = summary["id"].as_str().unwrap();
        let r = receipt(&gw, id).await;
        assert_eq!(r["schema_version"], "samgate-consent-receipt/1");
        assert_eq!(r["record_id"], id);
        assert_eq!(r["consent_id"], id);
        assert_eq!(r["subject"], summary["subject"]);
        assert!(r["subject"].as_str().unwrap().starts_with("ps1_"));
        assert!(uuid::Uuid::parse_str(r["receipt_id"].as_str().unwrap()).is_ok());
        assert_eq!(r["language"], "sv");
        assert_eq!(
            r["controllers"],
            json!([
                {"party_id": "af", "party_name": "Arbetsförmedlingen", "party_type": "arbetsformedlingen",
                 "party_role": "dpv:JointDataControllers"},
                {"party_id": "fk", "party_name": "Försäkringskassan", "party_type": "forsakringskassan",
                 "party_role": "dpv:JointDataControllers"},
            ])
        );
        assert_eq!(r["recipients"], json!(["af", "fk"]));
        assert_eq!(
            r["purposes"],
            json!([
                {"purpose": "samordnad-rehabilitering", "in_force": true},
                {"purpose": "uppfoljning", "in_force": true},
            ])
        );
        assert_eq!(
            r["data_categories"],
            json!([
                {"pii_type": "case", "special_category": false},
                {"pii_type": "health", "special_category": true},
            ])
        );
        assert_eq!(r["legal_basis"]["dpv"], "dpv:ExplicitlyExpressedConsent");
        assert!(r["legal_basis"]["description"]
            .as_str()
            .unwrap()
            .contains("12 kap. 2 §"));
        assert_eq!(r["method"], "written");
        assert_eq!(r["given_by"], Value::Null);
        assert_eq!(r["recorded_by"], "handlaggare.eva");
        assert_eq!(r["issuer"], "sfk-kalmar-intake");
        assert_eq!(r["protected_identity"], false);
        assert_eq!(r["validity"]["not_before"], summary["not_before"]);
        assert_eq!(r["validity"]["expires_at"], summary["expires_at"]);
        assert_eq!(r["validity"]["valid_until"], summary["expires_at"]);
        assert_eq!(r["state"], "active");
        assert_eq!(r["consent_status"], "dpv:ConsentGiven");
        assert_eq!(
            r["history"],
            json!([{"event": "recorded", "time": summary["recorded_at"], "event_state": "dpv:ConsentGiven"}])
        );
        assert!(!r.to_string().contains(ALVA));
        // Intake only; unknown ids are 404.
        let rsp = gw
            .client("fk")
            .get(&format!("/v1/consents/{id}/receipt"))
            .await;
        assert_eq!(rsp.problem_code(), (403, "forbidden_role"));
        let rsp = gw
            .client("sfk-kalmar")
            .get(&format!("/v1/consents/{}/receipt", uuid::Uuid::new_v4()))
            .await;
        assert_eq!(rsp.problem_code(), (404, "not_found"));
    }
);

/// The `fk` → `af` referral route listing every field, revealed.
fn referral_route(c: &mut samgate::config::Config) {
    c.routes.push(route(
        "fk",
        &["af"],
        "referral",
        &["*"],
        SubjectMode::Reveal,
    ));
    fast_retries(c);
}

/// Sends Alva's async referral to af, which answers only after `delay`,
/// and waits until it has reached af's inbox (past its consent check); the
/// exchange id.
async fn slow_referral_arrived(gw: &TestGateway, delay: Duration) -> String {
    gw.recipient("af").push_reply(Reply::delayed(delay));
    let rsp = gw.client("fk").post_exchange(&referral_of(ALVA)).await;
    assert_eq!(rsp.status, 202, "{}", rsp.text);
    eventually(|| gw.recipient("af").arrivals() == 1).await;
    rsp.exchange_id()
}

fn referral_of(who: &str) -> Value {
    let mut payload = example("referral");
    payload["subject"] = json!(who);
    payload.as_object_mut().unwrap().remove("decision");
    payload.as_object_mut().unwrap().remove("suggested_measure");
    let mut env = send("af", "referral", who, payload);
    env["delivery"] = json!("async");
    env
}

both_backends!(
    a_protected_marking_recorded_while_a_message_waits_keeps_its_contact_fields_in,
    |db| async move {
        let gw = TestGateway::spawn_with(db, referral_route).await;
        record(&gw, &consent_args(&gw, ALVA, PARTIES, ALL)).await;
        // The recipient is down: the referral, with the phone number, waits.
        gw.recipient("af").set_down(true);
        let rsp = gw.client("fk").post_exchange(&referral_of(ALVA)).await;
        assert_eq!(rsp.status, 202, "{}", rsp.text);
        let exchange_id = rsp.exchange_id();
        assert!(rsp.json()["forwarded"]
            .as_array()
            .unwrap()
            .contains(&json!("/phone")));
        // Intake learns of the protected identity and records a new consent
        // with the marking (the waiting message was decided under the first).
        let mut args = consent_args(&gw, ALVA, PARTIES, ALL);
        args.protected_identity = true;
        let status = || async { gw.client("fk").exchange_status(&exchange_id).await };
        record(&gw, &args).await;
        // An attempt that began before the marking was committed may still
        // be in flight: wait until one that began after it has been made
        // (it fails on the recipient, or ends the exchange at its check),
        // so that every later attempt is checked against the marking.
        let after = status().await["attempts"].as_i64().unwrap() + 2;
        let checked =
            |st: &Value| st["status"] != "queued" || st["attempts"].as_i64().unwrap() >= after;
        gw.client("fk")
            .wait_for_exchange(&exchange_id, &checked)
            .await;
        assert!(checked(&status().await));
        gw.recipient("af").set_down(false);
        gw.client("fk")
            .wait_for_exchange(&exchange_id, |s| s["status"] != "queued")
            .await;
        let st = status().await;
        assert_eq!(st["status"], "failed", "{st}");
        assert_eq!(st["last_error"], "consent_scope", "{st}");
        assert!(
            gw.recipient("af").received().is_empty(),
            "the waiting message left with its contact fields"
        );
    }
);

both_backends!(
    a_delivery_in_flight_when_the_consent_is_revoked_gets_its_notice,
    |db| async move {
        let gw = TestGateway::spawn_with(db, referral_route).await;
        let id = consent_to_all(&gw, ALVA).await;
        // The recipient takes its time to answer the async delivery.
        let exchange_id = slow_referral_arrived(&gw, Duration::from_millis(1500)).await;
        // It has passed its consent check and reached the inbox when the
        // participant withdraws.
        let rsp = gw.revoke(&id, &json!({})).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        // The recipient accepts the message afterwards, and is then told.
        eventually(|| !notices(&gw, "af").is_empty()).await;
        let got = gw.recipient("af").received();
        assert_eq!(got[0].json()["exchange_id"], exchange_id.as_str());
        let n = &notices(&gw, "af")[0];
        assert_eq!(n["exchange_ids"], json!([exchange_id]));
        assert_eq!(n["consent_id"], id.as_str());
        assert_eq!(n["subject"], json!({"personnummer": ALVA}));
        // Exactly once, also after the outbox's own sweep.
        samgate::consent::notices::sweep_pending(gw.state()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(notices(&gw, "af").len(), 1);
    }
);

// Review of f3af744 (lrev): a delivery whose answer the gateway never saw
// (the recipient read the whole message, the attempt timed out) is a
// `failed` attempt to the gateway; when the consent is revoked before the
// retry, the retry is refused (`consent_revoked`) and the party that holds
// the message is never told.
both_backends!(
    a_delivery_that_reached_the_recipient_but_timed_out_gets_its_notice,
    |db| async move {
        let gw = TestGateway::spawn_with(db, |c| {
            referral_route(c);
            c.delivery.timeout = Duration::from_millis(400);
        })
        .await;
        let id = consent_to_all(&gw, ALVA).await;
        // The recipient reads the whole message but answers too late.
        let exchange_id = slow_referral_arrived(&gw, Duration::from_secs(3)).await;
        // The recipient is then unreachable for a while (its retries fail).
        gw.recipient("af").set_down(true);
        let status = || async { gw.client("fk").exchange_status(&exchange_id).await };
        // The timed-out attempt is recorded as a failed attempt.
        gw.client("fk")
            .wait_for_exchange(&exchange_id, |s| s["attempts"].as_i64().unwrap() >= 1)
            .await;
        assert!(status().await["attempts"].as_i64().unwrap() >= 1);
        // The participant withdraws; the next attempt is refused.
        let rsp = gw.revoke(&id, &json!({})).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        gw.client("fk")
            .wait_for_exchange(&exchange_id, |s| s["status"] != "queued")
            .await;
        let st = status().await;
        assert_eq!(st["status"], "failed", "{st}");
        assert_eq!(st["last_error"], "consent_revoked", "{st}");
        gw.recipient("af").set_down(false);
        samgate::consent::notices::sweep_pending(gw.state()).await;
        // The recipient holds the referral (it read it): it must be told.
        assert_eq!(gw.recipient("af").arrivals(), 1);
        let queued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM exchanges WHERE msg_type = 'consent-revoked' AND recipient = 'af'",
        )
        .fetch_one(gw.pool())
        .await
        .unwrap();
        assert_eq!(
            queued, 1,
            "no revocation notice for a party that read the message"
        );
    }
);

// Review of f3af744 (lrev): revocation notices look up the party's endpoint
// in the configuration the process started with (`state.config`), not the
// reloaded one (`state.live()`) that the exchanges themselves use. A party
// whose endpoint moved by a reload (SIGHUP) received its data at the new
// endpoint; its notice goes to the old one (here still running; in real
// life a decommissioned host, so the notice is retried until it expires).
both_backends!(
    a_revocation_notice_goes_to_the_endpoint_the_data_went_to_after_a_reload,
    |db| async move {
        let gw = TestGateway::spawn_with(db, fast_retries).await;
        let id = consent_to_all(&gw, ALVA).await;
        // fk moves its inbox: a new endpoint, configured by a reload.
        let moved =
            crate::harness::Recipient::start(gw.dir.path(), "fk", "127.0.0.1:0".parse().unwrap())
                .await;
        let path = gw.write_config("moved.toml", |t| {
            for p in t["party"].as_array_mut().unwrap() {
                if p["id"].as_str() == Some("fk") {
                    let ep = format!("https://127.0.0.1:{}/inbox", moved.addr.port());
                    p["endpoint"] = toml::Value::String(ep);
                }
            }
        });
        samgate::reload::reload(gw.state(), &path).unwrap();
        let rsp = gw
            .client("kommun-kalmar")
            .post_exchange(&send(
                "fk",
                "attendance-report",
                ALVA,
                example("attendance-report"),
            ))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let exchange_id = rsp.exchange_id();
        // The data went to the new endpoint.
        assert_eq!(moved.received().len(), 1);
        assert!(gw.recipient("fk").received().is_empty());
        let rsp = gw.revoke(&id, &json!({})).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let at_new = || {
            moved
                .received()
                .iter()
                .map(|r| r.json())
                .filter(|v| v["type"] == "consent-revoked")
                .count()
        };
        for _ in 0..400 {
            if at_new() > 0 || !notices(&gw, "fk").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            notices(&gw, "fk").is_empty(),
            "the notice went to fk's old endpoint, which never received {exchange_id}"
        );
        assert_eq!(at_new(), 1, "fk's current endpoint was not told");
    }
);

// Review of f3af744 (lrev): after a closure the consent keeps its original
// purposes for further `closure` messages "so that every receiving party
// can be told" — but not only once per party: the same sender can keep
// sending the same party closures, each with the free-text `future_plan`
// and `hours_per_week`, under `samordnad-rehabilitering` for the whole
// follow-up period (DESIGN §13: other purposes are 403 `consent_scope`).
both_backends!(
    after_a_closure_a_party_already_told_gets_no_further_closure,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        record(&gw, &consent_args(&gw, ALVA, PARTIES, ALL)).await;
        let kommun = gw.client("kommun-kalmar");
        let closure = |plan: &str| {
            let mut p = example("closure");
            p["future_plan"] = json!(plan);
            send("fk", "closure", ALVA, p)
        };
        let rsp = kommun.post_exchange(&closure("The plan.")).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        // fk has been told; months later the municipality sends it more.
        let rsp = kommun
            .post_exchange(&closure("New notes on her health."))
            .await;
        assert_eq!(
            rsp.problem_code(),
            (403, "consent_scope"),
            "a second closure to a party already told passed: {}",
            rsp.text
        );
    }
);

both_backends!(
    a_party_that_received_two_forms_gets_its_second_notice_later_and_by_the_day,
    |db| async move {
        // af receives Alva revealed (referral) and pseudonymised (attendance).
        let gw = TestGateway::spawn_with(db, |c| {
            referral_route(c);
            let referral = c.routes.pop().unwrap();
            c.routes.insert(0, referral);
            c.routes.insert(
                0,
                route(
                    "fk",
                    &["af"],
                    "attendance-report",
                    &["*"],
                    SubjectMode::Pseudonymise,
                ),
            );
        })
        .await;
        let id = consent_to_all(&gw, ALVA).await;
        let fk = gw.client("fk");
        let mut referral = referral_of(ALVA);
        referral["delivery"] = json!("sync");
        assert_eq!(fk.post_exchange(&referral).await.status, 200);
        let att = send(
            "af",
            "attendance-report",
            ALVA,
            example("attendance-report"),
        );
        assert_eq!(fk.post_exchange(&att).await.status, 200);
        let rsp = gw.revoke(&id, &json!({})).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let revoked_at = rsp.json()["revoked_at"].as_str().unwrap().to_owned();
        // The revealed form arrives at once, exact to the microsecond.
        eventually(|| !notices(&gw, "af").is_empty()).await;
        let first = &notices(&gw, "af")[0];
        assert_eq!(first["subject"], json!({"personnummer": ALVA}));
        assert_eq!(first["revoked_at"], revoked_at.as_str());
        // The pseudonymous one waits in the outbox, at least a minute, and
        // says only the day.
        type Row = (String, i64, String, Vec<u8>, Vec<u8>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT o.exchange_id, o.next_attempt_us, o.body_key_id, o.body_nonce, o.body_sealed \
             FROM outbox o JOIN exchanges e ON e.id = o.exchange_id \
             WHERE e.msg_type = 'consent-revoked' AND e.recipient = 'af'",
        )
        .fetch_all(gw.pool())
        .await
        .unwrap();
        // (The first one's row may still be there while its delivery is
        // being recorded.)
        let soon = gw.state().clock.now_us() + 50_000_000;
        let later: Vec<Row> = rows.into_iter().filter(|r| r.1 >= soon).collect();
        assert_eq!(later.len(), 1);
        let (notice_id, _, key_id, nonce, ciphertext) = later.into_iter().next().unwrap();
        let sealed = samgate::subject::vault::Sealed {
            key_id,
            nonce: nonce.try_into().unwrap(),
            ciphertext,
        };
        let body = gw
            .state()
            .crypto
            .vault
            .open_bytes(&samgate::exchange::outbox::aad(&notice_id), &sealed)
            .unwrap();
        let second: Value = serde_json::from_slice(&body).unwrap();
        assert!(second["subject"]["pseudonym"]
            .as_str()
            .unwrap()
            .starts_with("ps1_"));
        let day = &revoked_at[..10];
        assert_eq!(second["revoked_at"], format!("{day}T00:00:00Z"));
        assert_ne!(second["exchange_ids"], first["exchange_ids"]);
        // Random ids (v4): a v7 id would carry the time the notices were
        // made, the same for both.
        for n in [first, &second] {
            let id = uuid::Uuid::parse_str(n["exchange_id"].as_str().unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 4, "{n}");
        }
    }
);

both_backends!(
    a_protected_persons_older_unmarked_consent_lists_no_contact_either,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let older = record(&gw, &consent_args(&gw, BERIT, PARTIES, ALL)).await;
        let id = older["id"].as_str().unwrap().to_owned();
        assert!(receipt(&gw, &id).await.to_string().contains("contact"));
        // Intake learns of the marking and records a new consent with it.
        let mut args = consent_args(&gw, BERIT, PARTIES, &["case", "contact"]);
        args.protected_identity = true;
        record(&gw, &args).await;
        // The older consent's receipt and summary now carry the person's
        // marking and hold nothing of the contact category.
        let r = receipt(&gw, &id).await;
        assert_eq!(r["protected_identity"], true, "{r}");
        assert!(!r.to_string().contains("contact"), "{r}");
        assert!(r["data_categories"]
            .as_array()
            .unwrap()
            .contains(&json!({"pii_type": "identity", "special_category": false})));
        let s = gw
            .client("sfk-kalmar")
            .get(&format!("/v1/consents/{id}"))
            .await
            .json();
        assert_eq!(s["protected_identity"], true, "{s}");
        let categories = s["categories"].as_array().unwrap();
        assert!(!categories.contains(&json!("contact")), "{s}");
        assert_eq!(categories.len(), ALL.len() - 1, "{s}");
        // A later consent that forgot the flag is recorded as the person's.
        let later = record(&gw, &consent_args(&gw, BERIT, PARTIES, ALL)).await;
        assert_eq!(later["protected_identity"], true, "{later}");
        assert!(!later["categories"]
            .as_array()
            .unwrap()
            .contains(&json!("contact")));
        // Revoking it answers with the same summary.
        let rsp = gw
            .client("sfk-kalmar")
            .post(&format!("/v1/consents/{id}/revocation"), &json!({}))
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_eq!(rsp.json()["protected_identity"], true);
        assert!(!rsp.json()["categories"]
            .as_array()
            .unwrap()
            .contains(&json!("contact")));
        // Another participant's consents are untouched.
        let alva = record(&gw, &consent_args(&gw, ALVA, PARTIES, ALL)).await;
        assert_eq!(alva["protected_identity"], false);
        assert!(alva["categories"]
            .as_array()
            .unwrap()
            .contains(&json!("contact")));
        let r = receipt(&gw, alva["id"].as_str().unwrap()).await;
        assert_eq!(r["protected_identity"], false);
        assert!(r.to_string().contains("\"contact\""));
    }
);
