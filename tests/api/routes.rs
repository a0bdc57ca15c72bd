//! Every route of the demo configuration: a full example payload is sent and
//! the recipient receives exactly the allow-listed, consent-covered fields,
//! with the subject and identifier fields as the route says.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{consent_args, now, record_signed, TestGateway, ALVA};
use samgate::policy::route::ConsentRequirement;
use samgate::policy::SubjectMode;

both_backends!(
    every_demo_route_forwards_exactly_its_allowed_fields,
    |db| async move {
        let gw = TestGateway::spawn(db).await;
        let parties: Vec<String> = gw.config.parties.iter().map(|p| p.id.to_string()).collect();
        let purposes: Vec<String> = gw.config.known_purposes().into_iter().collect();
        let categories: Vec<String> = samgate::schema::Category::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        let mut args = consent_args(&gw, ALVA, &[], &[]);
        args.parties = parties;
        args.purposes = purposes;
        args.categories = categories;
        record_signed(&gw, &args, now()).await;
        let pnr = gw.personnummer(ALVA);

        let routes = gw.config.routes.clone();
        let mut checked = 0;
        for route in &routes {
            let schema = gw.state().schemas.get(&route.msg_type).unwrap();
            let example: Value =
                serde_json::from_str(samgate::schema::builtin_example(&route.msg_type).unwrap())
                    .unwrap();
            let present: BTreeSet<String> = example
                .as_object()
                .unwrap()
                .keys()
                .map(|k| format!("/{k}"))
                .collect();
            let star = route.fields.iter().any(|f| f == "*");
            let expected: BTreeSet<String> = present
                .iter()
                .filter(|p| {
                    route.fields.contains(p)
                        || (star
                            && schema.field(p).unwrap().category
                                != samgate::schema::Category::FreeText)
                })
                .filter(|p| {
                    !(schema.field(p).unwrap().identifier && route.subject == SubjectMode::Omit)
                })
                .cloned()
                .collect();
            for from in &route.from {
                for to in &route.to {
                    let recipient = gw.recipient(to.as_str());
                    let before = recipient.received().len();
                    let mut env = json!({"to": to.as_str(), "type": route.msg_type, "purpose": route.purposes[0], "payload": example});
                    if route.consent == ConsentRequirement::Required {
                        env["subject"] = json!(ALVA);
                    }
                    let rsp = gw.client(from.as_str()).post_exchange(&env).await;
                    let what = format!("{} {from} -> {to}", route.msg_type);
                    assert_eq!(rsp.status, 200, "{what}: {}", rsp.text);
                    let body = rsp.json();
                    let withheld: Vec<String> = present.difference(&expected).cloned().collect();
                    assert_eq!(
                        body["forwarded"],
                        json!(expected.iter().collect::<Vec<_>>()),
                        "{what}"
                    );
                    assert_eq!(body["withheld"], json!(withheld), "{what}");

                    let got = recipient.received();
                    assert_eq!(got.len(), before + 1, "{what}");
                    let msg = got.last().unwrap().json();
                    let mut want = serde_json::Map::new();
                    for p in &expected {
                        let k = &p[1..];
                        let v = if schema.field(p).unwrap().identifier {
                            match route.subject {
                                SubjectMode::Reveal => json!(ALVA),
                                SubjectMode::Pseudonymise => json!(gw
                                    .state()
                                    .crypto
                                    .pseudonym(to.as_str(), &pnr)
                                    .unwrap()
                                    .as_str()),
                                SubjectMode::Omit => unreachable!(),
                            }
                        } else {
                            example[k].clone()
                        };
                        want.insert(k.to_owned(), v);
                    }
                    assert_eq!(msg["payload"], Value::Object(want), "{what}");
                    let subject = match (route.consent, route.subject) {
                        (ConsentRequirement::NotRequired, _) | (_, SubjectMode::Omit) => {
                            Value::Null
                        }
                        (_, SubjectMode::Reveal) => json!({"personnummer": ALVA}),
                        (_, SubjectMode::Pseudonymise) => {
                            json!({"pseudonym": gw.state().crypto.pseudonym(to.as_str(), &pnr).unwrap().as_str()})
                        }
                    };
                    assert_eq!(msg["subject"], subject, "{what}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 20, "only {checked} route pairs checked");
    }
);
