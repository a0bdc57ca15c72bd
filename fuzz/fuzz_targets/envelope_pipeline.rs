//! The envelope + schema + filter pipeline of `POST /v1/exchanges` (DESIGN
//! §4, §5, §10): JSON body parsing with typed errors, schema validation, the
//! identifier checks, and the field filter for every route of the type,
//! under each subject mode. What is forwarded must be allowed by the route
//! and never carry a personnummer on pseudonymise/omit routes.
#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use samgate::subject::personnummer::Personnummer;
use samgate::policy::{self, FilterInput, SubjectMode};
use samgate::schema::{Category, SchemaRegistry};
use serde_json::Value;
use std::sync::OnceLock;

/// The date numbers are judged on (the gateway passes its clock's).
const TODAY: time::Date = time::macros::date!(2026 - 06 - 01);

fn registry() -> &'static SchemaRegistry {
    static R: OnceLock<SchemaRegistry> = OnceLock::new();
    R.get_or_init(|| SchemaRegistry::builtin().expect("schemas"))
}

fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    let Ok(env) = samgate::http::extract::parse_json::<Value>(data) else {
        return;
    };
    let (Some(msg_type), Some(payload)) = (env["type"].as_str(), env.get("payload")) else {
        return;
    };
    let _ = env["subject"]
        .as_str()
        .map(|s| Personnummer::parse_at(s, TODAY));
    let Some(schema) = registry().get(msg_type) else {
        return;
    };
    if schema.validate(payload).is_err()
        || policy::check_identifiers(schema, payload, TODAY).is_err()
    {
        return;
    }
    let all: BTreeSet<Category> = Category::ALL.into_iter().collect();
    let some: BTreeSet<Category> = Category::ALL.into_iter().take(data.len() % 11).collect();
    for route in f.config.routes.iter().filter(|r| r.msg_type == msg_type) {
        for cats in [Some(&all), Some(&some), None] {
            let mode = route.subject;
            let mut ident = |p: &Personnummer| match mode {
                SubjectMode::Reveal => Some(p.expose().to_owned()),
                SubjectMode::Pseudonymise => Some("pseudonym-of-subject".to_owned()),
                SubjectMode::Omit => None,
            };
            let Ok(out) = policy::filter(
                FilterInput {
                    schema,
                    payload,
                    allow: &route.fields,
                    consent_categories: cats,
                    today: TODAY,
                },
                &mut ident,
            ) else {
                continue;
            };
            let star = route.fields.iter().any(|f| f == "*");
            for p in &out.forwarded {
                assert!(
                    star || route.fields.contains(p),
                    "forwarded {p} not allowed"
                );
                assert!(!out.withheld.contains(p), "{p} both forwarded and withheld");
            }
            if mode != SubjectMode::Reveal {
                let text = out.payload.to_string();
                for w in text.split(|c: char| !c.is_ascii_digit() && c != '-' && c != '+') {
                    if w.len() >= 10 {
                        assert!(
                            Personnummer::parse_at(w, TODAY).is_err(),
                            "a personnummer left on a {mode:?} route"
                        );
                    }
                }
            }
        }
    }
});
