//! The auditor API and disclosures (DESIGN §6, §9): filters and pages,
//! subject search, proofs, the export, roles, and that every query is
//! itself in the log and no personnummer is ever in an answer.

use base64::Engine;
use samgate::audit::merkle::Hash;
use samgate::audit::record::AuditRecord;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{consent_args, pnr_forms, record_signed, Client, Db, TestGateway};

pub const PNR_A: &str = crate::harness::ALVA;
pub const PNR_B: &str = crate::harness::BERIT;

/// A record as the exchange code would write it.
pub fn rec(
    action: &str,
    from: &str,
    to: &str,
    decision: &str,
    subject: Option<String>,
) -> AuditRecord {
    AuditRecord {
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        actor_party: Some(from.into()),
        from: Some(from.into()),
        to: Some(to.into()),
        msg_type: Some(
            if to == "fk" {
                "attendance-report"
            } else {
                "benefit-status"
            }
            .into(),
        ),
        purpose: Some("samordnad-rehabilitering".into()),
        subject,
        exchange_id: Some(uuid::Uuid::new_v4().to_string()),
        forwarded: vec!["/attended_hours".into(), "/period".into()],
        withheld: vec!["/notes".into()],
        payload_sha256: Some(hex::encode([7u8; 32])),
        ..AuditRecord::new(action.parse().unwrap(), decision.parse().unwrap())
    }
}

/// A gateway with `n` seeded records, and its auditor's client.
pub async fn seeded(db: Db, n: usize) -> (TestGateway, Client) {
    let gw = TestGateway::spawn(db).await;
    seed(&gw, n).await;
    let auditor = gw.auditor();
    (gw, auditor)
}

/// Appends `n` varied records: parties, actions, decisions and subjects cycle.
pub async fn seed(gw: &TestGateway, n: usize) {
    let subjects = [
        Some(gw.audit_pseudonym(PNR_A)),
        Some(gw.audit_pseudonym(PNR_B)),
        None,
    ];
    for i in 0..n {
        let (action, decision) = match i % 3 {
            0 => ("exchange-forwarded", "permit"),
            1 => ("exchange-delivered", "delivered"),
            _ => ("exchange-denied", "deny"),
        };
        let (from, to) = if i % 2 == 0 {
            ("af", "fk")
        } else {
            ("fk", "af")
        };
        let r = rec(action, from, to, decision, subjects[(i / 3) % 3].clone());
        gw.state().audit.append(r, vec![]).await.unwrap();
    }
}

/// Every form of both test numbers is absent from `text`.
pub fn assert_no_pnr(text: &str) {
    for n in [PNR_A, PNR_B] {
        for form in pnr_forms(n) {
            assert!(
                !text.contains(&form),
                "a response contains a personnummer form"
            );
        }
    }
}

/// Walks every page of `path` (which has a `?`), checking each page.
pub async fn walk(c: &Client, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = path.to_owned();
    loop {
        let rsp = c.get(&url).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_no_pnr(&rsp.text);
        let j = rsp.json();
        out.extend(j["records"].as_array().unwrap().iter().cloned());
        match j["next_cursor"].as_str() {
            Some(cur) => url = format!("{path}&cursor={cur}"),
            None => return out,
        }
    }
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

pub fn leaf_of(r: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(r["leaf"].as_str().unwrap())
        .unwrap()
}

pub fn hash_hex(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

both_backends!(
    records_filter_and_page_without_gaps_or_repeats,
    |db| async move {
        let (gw, c) = seeded(db, 40).await;
        let all = walk(&c, "/v1/audit/records?limit=7").await;
        assert_eq!(
            seqs(&all),
            (1..=40).collect::<Vec<_>>(),
            "a walk is the snapshot at its start"
        );
        for r in &all {
            let leaf = leaf_of(r);
            let parsed = AuditRecord::from_leaf(&leaf).unwrap();
            assert_eq!(parsed.leaf_bytes(), leaf);
            // Exactly the leaf's fields plus `leaf` (DESIGN §10).
            let mut rest = r.as_object().unwrap().clone();
            rest.remove("leaf");
            assert_eq!(
                serde_json_canonicalizer::to_vec(&rest).unwrap(),
                leaf,
                "a served record is its leaf plus `leaf`"
            );
            assert_eq!(r["seq"], parsed.seq);
            assert_eq!(r["action"], parsed.action.as_str());
        }
        let expect = |f: &dyn Fn(&Value) -> bool| -> Vec<u64> {
            seqs(&all.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>())
        };
        let cases: Vec<(&str, Vec<u64>)> = vec![
            (
                "party=af",
                expect(&|r| r["from"] == "af" || r["to"] == "af" || r["actor_party"] == "af"),
            ),
            (
                "action=exchange-denied",
                expect(&|r| r["action"] == "exchange-denied"),
            ),
            (
                "decision=delivered",
                expect(&|r| r["decision"] == "delivered"),
            ),
            (
                "type=attendance-report",
                expect(&|r| r["type"] == "attendance-report"),
            ),
            (
                "party=af&action=exchange-forwarded",
                expect(&|r| {
                    (r["from"] == "af" || r["to"] == "af") && r["action"] == "exchange-forwarded"
                }),
            ),
        ];
        for (q, want) in cases {
            assert!(!want.is_empty(), "{q}");
            let got = walk(&c, &format!("/v1/audit/records?limit=3&{q}")).await;
            assert_eq!(seqs(&got), want, "{q}");
        }
        let a = gw.audit_pseudonym(PNR_A);
        let got = walk(&c, &format!("/v1/audit/records?subject={a}")).await;
        assert_eq!(seqs(&got), expect(&|r| r["subject"] == a.as_str()));
        // Time range: [from, to) on the record time.
        let mid = all[20]["time"].as_str().unwrap().to_owned();
        let t = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let got = walk(&c, &format!("/v1/audit/records?limit=1000&from={mid}")).await;
        // Beyond the seeded 40 are the audit-query records of this test.
        let (seeded, queries): (Vec<Value>, Vec<Value>) = got
            .into_iter()
            .partition(|r| r["seq"].as_u64().unwrap() <= 40);
        assert_eq!(
            seqs(&seeded),
            expect(&|r| t(r["time"].as_str().unwrap()) >= t(&mid))
        );
        assert!(queries.iter().all(|r| r["action"] == "audit-query"));
        let got = walk(&c, &format!("/v1/audit/records?to={mid}")).await;
        assert_eq!(
            seqs(&got),
            expect(&|r| t(r["time"].as_str().unwrap()) < t(&mid))
        );
        let got = walk(&c, "/v1/audit/records?from=2999-01-01T00:00:00Z").await;
        assert!(got.is_empty());
        // The default page is 100 and the largest 1000.
        let rsp = c.get("/v1/audit/records?limit=1000").await;
        assert_eq!(rsp.status, 200);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=abc",
            "limit=-1",
            "cursor=nonsense",
            "from=yesterday",
            "to=2026-13-01T00:00:00Z",
            "subject=ps1_nope",
            "party=20020314-9828",
            "party=FK",
            "colour=red",
            "limit=1&limit=2",
        ] {
            let rsp = c.get(&format!("/v1/audit/records?{bad}")).await;
            assert_eq!(rsp.status, 400, "{bad}: {}", rsp.text);
            assert_eq!(rsp.problem(), "invalid_envelope", "{bad}");
            assert_no_pnr(&rsp.text);
        }
    }
);

both_backends!(
    subject_search_returns_exactly_that_subjects_records,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        seed(&gw, 12).await;
        record_consent(&gw, PNR_A).await;
        let c = gw.auditor();
        let a = gw.audit_pseudonym(PNR_A);
        let all = walk(&c, "/v1/audit/records?limit=1000").await;
        let want: Vec<u64> = seqs(
            &all.iter()
                .filter(|r| r["subject"] == a.as_str())
                .cloned()
                .collect::<Vec<_>>(),
        );
        assert!(all
            .iter()
            .any(|r| r["action"] == "consent-recorded" && r["subject"] == a.as_str()));
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        for form in pnr_forms(PNR_A).iter().cycle() {
            let mut body = json!({"personnummer": form, "limit": 2});
            if let Some(cur) = &cursor {
                body["cursor"] = json!(cur);
            }
            let rsp = c
                .post_with(
                    "/v1/audit/subject-search",
                    &body,
                    &[("x-request-id", "search-1")],
                )
                .await;
            assert_eq!(rsp.status, 200, "{}", rsp.text);
            assert_no_pnr(&rsp.text);
            let j = rsp.json();
            got.extend(seqs(j["records"].as_array().unwrap()));
            match j["next_cursor"].as_str() {
                Some(cur) => cursor = Some(cur.to_owned()),
                None => break,
            }
        }
        assert_eq!(got, want);
        // The searches themselves are logged under the subject's pseudonym.
        let queries = walk(&c, "/v1/audit/records?action=audit-query&limit=1000").await;
        let searches: Vec<_> = queries
            .iter()
            .filter(|r| r["reason"] == "subject-search")
            .collect();
        assert_eq!(searches.len(), want.len().div_ceil(2).max(1));
        for s in searches {
            assert_eq!(s["subject"], a.as_str());
            assert_eq!(s["request_id"], "search-1");
            assert_eq!(s["actor_user"], "revisor.anna");
        }
        for bad in ["200203149829", "hello", "20020314-982"] {
            let rsp = c
                .post("/v1/audit/subject-search", &json!({"personnummer": bad}))
                .await;
            assert_eq!(rsp.status, 422, "{}", rsp.text);
            assert_eq!(rsp.problem(), "invalid_personnummer");
            assert!(!rsp.text.contains(bad));
        }
        let rsp = c
            .post(
                "/v1/audit/subject-search",
                &json!({"personnummer": PNR_A, "limit": 0}),
            )
            .await;
        assert_eq!(rsp.problem(), "invalid_envelope");
        crate::harness::assert_logs_clean(&[PNR_A, PNR_B]);
    }
);

/// Records a consent for `pnr` through `POST /v1/consents`: fk and af,
/// case and benefit, 30 days by the gateway's clock.
pub async fn record_consent(gw: &TestGateway, pnr: &str) {
    let mut args = consent_args(gw, pnr, &["fk", "af"], &["case", "benefit"]);
    args.issuer = samgate::init::CONSENT_ISSUER_ID.into();
    args.key_id = samgate::init::CONSENT_ISSUER_KEY_ID.into();
    args.purposes = vec!["samordnad-rehabilitering".into()];
    args.days = 30;
    args.method = "bankid".into();
    args.recorded_by = "intake-staff".into();
    record_signed(gw, &args, gw.state().clock.now().unix_timestamp()).await;
}

both_backends!(
    every_auditor_query_is_logged_with_its_user,
    |db| async move {
        // The gateway lives to the end of the test.
        let (_gw, c) = seeded(db, 5).await;
        let paths = [
            "/v1/audit/records?party=fk",
            "/v1/audit/tree-head",
            "/v1/audit/proof/inclusion?seq=1&tree_size=3",
            "/v1/audit/proof/consistency?first=2&second=4",
            "/v1/audit/export",
        ];
        for p in paths {
            let rsp = c.get(p).await;
            assert_eq!(rsp.status, 200, "{p}: {}", rsp.text);
        }
        let logged = walk(&c, "/v1/audit/records?action=audit-query").await;
        let reasons: Vec<&str> = logged
            .iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        assert_eq!(
            reasons,
            [
                "records party=fk",
                "tree-head",
                "inclusion seq=1 tree_size=3",
                "consistency first=2 second=4",
                "export from_seq=1"
            ]
        );
        for r in &logged {
            assert_eq!(r["actor_party"], "sfk-kalmar-audit");
            assert_eq!(r["actor_user"], "revisor.anna");
            assert_eq!(r["decision"], "permit");
            assert!(r["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        }
    }
);

#[tokio::test]
async fn the_auditor_api_needs_the_auditor_role_and_a_user_token() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let mut no_token = gw.auditor();
    no_token.bearer = None;
    let paths = [
        "/v1/audit/records",
        "/v1/audit/tree-head",
        "/v1/audit/export",
        "/v1/audit/proof/consistency?first=0&second=0",
    ];
    for p in paths {
        let rsp = no_token.get(p).await;
        assert_eq!(rsp.problem_code(), (401, "invalid_token"), "{p}");
        for party in ["fk", "sfk-kalmar"] {
            let rsp = gw.client(party).get(p).await;
            assert_eq!(rsp.problem_code(), (403, "forbidden_role"), "{party} {p}");
        }
    }
    let rsp = gw
        .client("af")
        .post("/v1/audit/subject-search", &json!({"personnummer": PNR_A}))
        .await;
    assert_eq!(rsp.problem(), "forbidden_role");
    let rsp = gw.auditor().disclosures(PNR_A).await;
    assert_eq!(rsp.problem(), "forbidden_role");
}

// Third review (helper attack): the auditor's filters refuse more than four
// digits (so no personnummer reaches the audit-query record behind a
// letter), but a party id is the operator's: a configured one with more
// digits must still filter, and the record names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_party_id_with_many_digits_is_a_valid_filter() {
    let gw = TestGateway::spawn_with(Db::Sqlite, |c| {
        let mut p = c
            .parties
            .iter()
            .find(|p| p.id.as_str() == "kommun-kalmar")
            .unwrap()
            .clone();
        p.id = samgate::party::PartyId::new("kommun-088012");
        p.certificate_sha256 = [7; 32];
        p.endpoint = None;
        p.endpoint_certificate_sha256 = None;
        c.parties.push(p);
    })
    .await;
    let a = gw.auditor();
    let rsp = a.get("/v1/audit/records?party=kommun-088012").await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);
    let rsp = a.get("/v1/audit/records?party=kommun-088013").await;
    assert_eq!(rsp.status, 400, "{}", rsp.text);
    let rsp = a
        .get("/v1/audit/records?from=2024-01-01T00:00:00.123456789Z")
        .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text);
    let all = a.get("/v1/audit/records?limit=100").await;
    let reasons: Vec<String> = all.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons.iter().any(|r| r == "records party=kommun-088012"),
        "{reasons:?}"
    );
    // The time as parsed, to the microsecond the filter uses.
    assert!(
        reasons
            .iter()
            .any(|r| r == "records from=2024-01-01T00:00:00.123456Z"),
        "{reasons:?}"
    );
}
