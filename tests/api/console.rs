//! The console (DESIGN §11) over real mTLS: personal user certificates as
//! principals (also on the API, without a JWT), the form path through the
//! same consent code and audit, CSRF, role refusals and headers. The
//! browser side is tests/console (Chromium).

use serde_json::Value;

use crate::both_backends;
use crate::harness::{Client, Rsp, TestGateway};

const PNR: &str = "19851224-1236";

fn user(gw: &TestGateway, id: &str) -> Client {
    Client::of(gw.addr(), gw.dir.path(), &format!("users/{id}"))
}

async fn get(c: &Client, path: &str) -> Rsp {
    c.try_get(path).await.unwrap()
}

/// Posts a form as a user, not following the redirect that answers success.
async fn post_form(gw: &TestGateway, id: &str, path: &str, form: &[(&str, &str)]) -> Rsp {
    let tls = samgate::tls::client_config(
        &gw.path("pki/ca.pem"),
        &gw.path(&format!("pki/users/{id}.pem")),
        &gw.path(&format!("pki/users/{id}.key")),
    )
    .unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        ser.append_pair(k, v);
    }
    let r = http
        .post(format!("https://127.0.0.1:{}{path}", gw.addr().port()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(ser.finish())
        .send()
        .await
        .unwrap();
    Rsp::read(r).await
}

/// A GET the browser marks as coming from another site, in `mode`.
async fn cross_site_get(c: &Client, path: &str, mode: &str) -> Rsp {
    c.get_with(
        path,
        &[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", mode)],
    )
    .await
}

/// The CSRF token of the first form on a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// The CSRF token Anna's next intake form posts, from her intake page.
async fn intake_csrf(gw: &TestGateway) -> String {
    let page = get(&user(gw, "anna.lind"), "/console/intake").await;
    csrf_of(&page.text)
}

async fn records(gw: &TestGateway, action: &str) -> Vec<Value> {
    let r = gw
        .auditor()
        .get(&format!("/v1/audit/records?action={action}&limit=1000"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["records"].as_array().unwrap().clone()
}

both_backends!(
    a_user_certificate_is_a_principal_on_the_api_without_a_jwt,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let erik = user(&gw, "erik.berg");
        let head = erik.get("/v1/audit/tree-head").await;
        assert_eq!(head.status, 200, "{}", head.text);
        let queries = records(&gw, "audit-query").await;
        assert!(queries
            .iter()
            .any(|r| r["actor_user"] == "erik.berg" && r["actor_party"] == "sfk-kalmar-audit"));
        // The party's own certificate still needs its JWT.
        let bare = gw
            .client("sfk-kalmar-audit")
            .get("/v1/audit/tree-head")
            .await;
        assert_eq!(bare.problem(), "invalid_token");
        // Anna has the intake role only, although her party is also an agency.
        let anna = user(&gw, "anna.lind");
        assert_eq!(
            anna.get("/v1/audit/records").await.problem(),
            "forbidden_role"
        );
        let ex = anna.post_exchange(&serde_json::json!({"to": "fk"})).await;
        assert_eq!(ex.problem(), "forbidden_role");
    }
);

both_backends!(
    the_console_form_records_through_the_consent_code_and_audit,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let anna = user(&gw, "anna.lind");
        let page = get(&anna, "/console/intake").await;
        assert_eq!(page.status, 200);
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert_eq!(page.headers["cache-control"], "no-store");
        assert!(!page.text.contains("<script>"), "no inline script");
        let token = csrf_of(&page.text);
        let form = |csrf: &'static str| -> Vec<(&'static str, &'static str)> {
            vec![
                ("csrf", csrf),
                ("personnummer", PNR),
                ("parties", "af"),
                ("parties", "fk"),
                ("purposes", "samordnad-rehabilitering"),
                ("categories", "attendance"),
                ("method", "written"),
                ("valid_until", "2099-01-01"),
            ]
        };
        // Over the longest lifetime: a Swedish error, nothing recorded.
        let too_long = post_form(
            &gw,
            "anna.lind",
            "/console/intake/consents",
            &form(token.clone().leak()),
        )
        .await;
        assert_eq!(too_long.status, 422);
        assert!(
            too_long.text.contains("högst 730 dagar"),
            "{}",
            too_long.text
        );
        assert!(!too_long.text.contains("8512241236") && !too_long.text.contains("851224-1236"));
        let until = thirty_days_on(&gw);
        let mut good = form(token.clone().leak());
        good.retain(|(k, _)| *k != "valid_until");
        good.push(("valid_until", until.leak()));
        let ok = post_form(&gw, "anna.lind", "/console/intake/consents", &good).await;
        assert_eq!(ok.status, 303, "{}", ok.text);
        let location = ok.headers["location"].to_str().unwrap().to_owned();
        let id = location.strip_prefix("/console/intake/consents/").unwrap();
        let summary = anna.get(&format!("/v1/consents/{id}")).await.json();
        assert_eq!(summary["issuer"], "console");
        assert_eq!(summary["recorded_by"], "anna.lind");
        assert_eq!(summary["state"], "active");
        let recorded = records(&gw, "consent-recorded").await;
        let rec = recorded.iter().find(|r| r["consent_id"] == id).unwrap();
        assert_eq!(rec["actor_user"], "anna.lind");
        assert_eq!(rec["actor_party"], "sfk-kalmar");
        // Without a valid token, or from an agency certificate: refused.
        let forged = post_form(
            &gw,
            "anna.lind",
            "/console/intake/consents",
            &form("forged"),
        )
        .await;
        assert_eq!(forged.status, 403);
        let af = gw.client("af");
        assert_eq!(get(&af, "/console/intake").await.status, 403);
        assert_eq!(
            get(&user(&gw, "erik.berg"), "/console/intake").await.status,
            403
        );
        assert_eq!(get(&anna, "/console/audit").await.status, 403);
        // The exchange path sees the console's consent.
        let body = serde_json::json!({
            "to": "fk", "type": "attendance-report", "purpose": "samordnad-rehabilitering",
            "subject": PNR, "delivery": "sync",
            "payload": {"period": {"start": "2026-11-01", "end": "2026-11-30"}, "attended_hours": 10}
        });
        let ex = af.post_exchange(&body).await;
        assert_eq!(ex.status, 200, "{}", ex.text);
        crate::harness::assert_logs_clean(&["198512241236"]);
    }
);

both_backends!(
    subject_search_keeps_the_reason_and_refuses_numbers_in_it,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let c = gw.auditor();
        let bad = c
            .post(
                "/v1/audit/subject-search",
                &serde_json::json!({"personnummer": PNR, "reason": "om 19851224-1236"}),
            )
            .await;
        assert_eq!(bad.problem(), "invalid_envelope");
        let ok = c
            .post(
                "/v1/audit/subject-search",
                &serde_json::json!({"personnummer": PNR, "reason": "dnr 2026/17"}),
            )
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        let queries = records(&gw, "audit-query").await;
        assert!(queries
            .iter()
            .any(|r| r["reason"] == "subject-search: dnr 2026/17"));
        assert!(!queries
            .iter()
            .any(|r| r["reason"].as_str().unwrap_or("").contains("1236")));
    }
);

both_backends!(
    requests_another_site_makes_the_browser_send_are_refused,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let anna = user(&gw, "anna.lind");
        // An empty no-cors POST from another page (no preflight): refused
        // before it can revoke anything in the user's name.
        let revoke = anna
            .post_with(
                "/v1/consents/00000000-0000-4000-8000-000000000000/revocation",
                &serde_json::json!({}),
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("sec-fetch-mode", "no-cors"),
                ],
            )
            .await;
        assert_eq!(revoke.status, 403, "{}", revoke.text);
        assert_eq!(revoke.problem(), "forbidden_role");
        // A POST whose Origin is another site, from a browser without
        // Sec-Fetch-* headers.
        let foreign = anna
            .post_with(
                "/v1/consents/00000000-0000-4000-8000-000000000000/revocation",
                &serde_json::json!({}),
                &[("origin", "https://evil.example")],
            )
            .await;
        assert_eq!(foreign.problem(), "forbidden_role");
        // An <img> pointing at an auditor page writes no audit-query record.
        let before = records(&gw, "audit-query").await.len();
        let erik = user(&gw, "erik.berg");
        let img = cross_site_get(&erik, "/v1/audit/records", "no-cors").await;
        assert_eq!(img.status, 403);
        // (records() itself adds one query record: the auditor's own read.)
        assert_eq!(records(&gw, "audit-query").await.len(), before + 1);
        // Following a link to the console's start page still works; the
        // same-origin requests of the console's own pages are untouched.
        let link = cross_site_get(&anna, "/console/", "navigate").await;
        assert_eq!(link.status, 200);
        let own = anna
            .get_with("/console/intake", &[("sec-fetch-site", "same-origin")])
            .await;
        assert_eq!(own.status, 200);
        // Agency systems send neither header.
        assert_eq!(gw.client("fk").get("/healthz").await.status, 200);
    }
);

both_backends!(
    a_party_token_naming_another_partys_person_does_not_sign_in,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        // sfk-kalmar-audit's own issuer names anna.lind (a user of sfk-kalmar).
        let c = gw.client_as_user("sfk-kalmar-audit", "anna.lind");
        let page = get(&c, "/console/").await;
        assert_eq!(page.status, 403, "{}", page.text);
        assert!(!page.text.contains("Anna Lind"), "{}", page.text);
    }
);

both_backends!(
    the_intake_consent_search_is_an_audited_query,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let token = intake_csrf(&gw).await;
        let before = records(&gw, "audit-query").await;
        let found = post_form(
            &gw,
            "anna.lind",
            "/console/intake/search",
            &[("csrf", &token), ("personnummer", PNR)],
        )
        .await;
        assert_eq!(found.status, 200, "{}", found.text);
        let after = records(&gw, "audit-query").await;
        let new: Vec<_> = after
            .iter()
            .filter(|r| !before.iter().any(|b| b["seq"] == r["seq"]))
            .filter(|r| r["actor_user"] == "anna.lind")
            .collect();
        assert_eq!(new.len(), 1, "{after:?}");
        assert!(new[0]["subject"].as_str().unwrap().starts_with("ps1_"));
        assert!(!new[0].to_string().contains("1236"));
    }
);

/// The date 30 days after the gateway clock's today (a `valid_until`).
fn thirty_days_on(gw: &TestGateway) -> String {
    gw.today()
        .saturating_add(time::Duration::days(30))
        .to_string()
}

/// Records a consent through the console form as Anna, returning its id.
async fn record_in_console(gw: &TestGateway, extra: &[(&str, &str)]) -> String {
    let token = intake_csrf(gw).await;
    let until = thirty_days_on(gw);
    let mut form: Vec<(&str, &str)> = vec![
        ("csrf", &token),
        ("personnummer", PNR),
        ("parties", "af"),
        ("parties", "fk"),
        ("purposes", "samordnad-rehabilitering"),
        ("categories", "attendance"),
        ("categories", "contact"),
        ("method", "written"),
        ("valid_until", &until),
    ];
    form.extend_from_slice(extra);
    let ok = post_form(gw, "anna.lind", "/console/intake/consents", &form).await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    let location = ok.headers["location"].to_str().unwrap();
    location
        .strip_prefix("/console/intake/consents/")
        .unwrap()
        .to_owned()
}

/// The consent page and the printed receipt page of consent `id`.
async fn pages(gw: &TestGateway, id: &str) -> (String, String) {
    let anna = user(gw, "anna.lind");
    let page = get(&anna, &format!("/console/intake/consents/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let receipt = get(&anna, &format!("/console/intake/consents/{id}/receipt")).await;
    assert_eq!(receipt.status, 200, "{}", receipt.text);
    (page.text, receipt.text)
}

both_backends!(
    the_intake_form_records_the_protected_identity_and_no_page_lists_contact,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let anna = user(&gw, "anna.lind");
        let form = get(&anna, "/console/intake").await.text;
        assert!(
            form.contains(r#"type="checkbox" name="protected_identity" value="yes""#),
            "{form}"
        );
        assert!(form.contains("Skyddade personuppgifter"), "{form}");
        // A consent recorded before intake learnt of the marking.
        let older = record_in_console(&gw, &[]).await;
        let (page, receipt) = pages(&gw, &older).await;
        assert!(page.contains("Kontaktuppgifter"), "{page}");
        assert!(receipt.contains("Kontaktuppgifter"), "{receipt}");
        assert!(!page.contains("Skyddade personuppgifter"), "{page}");
        // The marked consent: the signed claim carries the marking.
        let marked = record_in_console(&gw, &[("protected_identity", "yes")]).await;
        let claim = |id: String| {
            let pool = gw.state().store.pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT protected_identity FROM consents WHERE id = $1",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        assert_eq!(claim(marked.clone()).await, 1);
        assert_eq!(claim(older.clone()).await, 0);
        let s = anna.get(&format!("/v1/consents/{marked}")).await.json();
        assert_eq!(s["protected_identity"], true);
        // Both consents' pages show the marking and leave contact out:
        // the marking is the person's, whichever consent carries it.
        for id in [&marked, &older] {
            let (page, receipt) = pages(&gw, id).await;
            for text in [&page, &receipt] {
                assert!(text.contains("Skyddade personuppgifter"), "{id}: {text}");
                assert!(!text.contains("Kontaktuppgifter"), "{id}: {text}");
                assert!(text.contains("Närvaro"), "{id}: {text}");
            }
        }
        crate::harness::assert_logs_clean(&["198512241236"]);
    }
);

both_backends!(
    the_consent_pages_show_a_closure_in_swedish,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let mut args = crate::harness::consent_args(
            &gw,
            PNR,
            &["fk", "af", "kommun-kalmar", "region-kalmar", "sfk-kalmar"],
            &["case", "outcome", "attendance"],
        );
        args.days = 700;
        let token = samgate::consent::cli::sign_consent(&args, crate::harness::now()).unwrap();
        let rsp = gw
            .client("sfk-kalmar")
            .post("/v1/consents", &serde_json::json!({"token": token}))
            .await;
        assert_eq!(rsp.status, 201, "{}", rsp.text);
        let id = rsp.json()["id"].as_str().unwrap().to_owned();
        let (page, receipt) = pages(&gw, &id).await;
        assert!(!page.contains("Samverkan avslutades"), "{page}");
        assert!(!receipt.contains("Samverkan avslutades"), "{receipt}");
        let closure: Value =
            serde_json::from_str(samgate::schema::builtin_example("closure").unwrap()).unwrap();
        let rsp = gw
            .client("kommun-kalmar")
            .post(
                "/v1/exchanges",
                &serde_json::json!({"to": "fk", "type": "closure",
                    "purpose": "samordnad-rehabilitering", "subject": PNR,
                    "delivery": "sync", "payload": closure}),
            )
            .await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        let s = gw
            .client("sfk-kalmar")
            .get(&format!("/v1/consents/{id}"))
            .await
            .json();
        assert_eq!(s["state"], "closed");
        let closed = &s["closure"]["closed_at"].as_str().unwrap()[..10];
        let until = &s["closure"]["follow_up_until"].as_str().unwrap()[..10];
        let (page, receipt) = pages(&gw, &id).await;
        for text in [&page, &receipt] {
            assert!(text.contains("Avslutat, gäller för uppföljning"), "{text}");
            assert!(!text.contains(">closed<"), "{text}");
            assert!(
                text.contains(&format!("Samverkan avslutades {closed}")),
                "{text}"
            );
            assert!(
                text.contains(&format!("bara för uppföljning, till och med {until}")),
                "{text}"
            );
        }
    }
);
