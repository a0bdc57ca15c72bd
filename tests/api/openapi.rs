//! The OpenAPI document (`openapi.json` at the repository root): served as
//! checked in, documenting every route of the router, every problem code
//! with its status, and the message schemas exactly as in `schemas/`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::harness::{Db, TestGateway};

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn checked_in() -> Value {
    serde_json::from_str(&repo_file("openapi.json")).expect("openapi.json is valid JSON")
}

/// Follows a local `$ref` (`#/components/...`) until a non-reference.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').expect("only local references");
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling reference {r}"));
    }
    v
}

/// `(path, method)` of every `.route("path", method(handler)...)` in
/// `src/http/router.rs`, whatever the line breaks.
fn router_routes() -> BTreeSet<(String, String)> {
    // The browser console (DESIGN §11) is HTML, not part of the JSON API:
    // its nest and its start page are left out of the document.
    let src = repo_file("src/http/router.rs")
        .replace(".nest(\"/console\", crate::console::router())", "")
        .replace(".route(\"/console/\", crate::console::home_route())", "");
    for hidden in [".nest(", ".nest_service(", ".merge(", ".route_service("] {
        assert!(
            !src.contains(hidden),
            "src/http/router.rs mounts routes with `{hidden}`: this test only sees `.route(\"...\", ...)`; extend it"
        );
    }
    let mut out = BTreeSet::new();
    for (start, _) in src.match_indices(".route(") {
        let rest = &src[start + ".route(".len()..];
        let lit = rest.trim_start();
        let lit = lit
            .strip_prefix('"')
            .expect("a route path is a string literal");
        let end = lit.find('"').unwrap();
        let path = lit[..end].to_owned();
        // The handler expression: up to the `)` closing `.route(`.
        let mut depth = 0usize;
        let mut args = String::new();
        for c in lit[end + 1..].chars() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => break,
                ')' => depth -= 1,
                _ => {}
            }
            // Keep only the outermost level: `get(x).post(y)` → `get(.post(`.
            if depth == 0 || (depth == 1 && c == '(') {
                args.push(c);
            }
        }
        let mut methods = 0;
        for m in METHODS {
            for (i, _) in args.match_indices(&format!("{m}(")) {
                let before = args[..i].chars().last();
                if before.is_none_or(|b| !(b.is_alphanumeric() || b == '_')) {
                    out.insert((path.clone(), m.to_owned()));
                    methods += 1;
                }
            }
        }
        assert!(methods > 0, "no method found for route {path}: {args}");
    }
    out
}

#[tokio::test]
async fn the_served_document_is_the_checked_in_one() {
    let gw = TestGateway::spawn(Db::Sqlite).await;
    let file = checked_in();
    for client in [gw.client("fk"), gw.client("sfk-kalmar"), gw.auditor()] {
        let rsp = client.get("/openapi.json").await;
        assert_eq!(rsp.status, 200, "{}", rsp.text);
        assert_eq!(
            rsp.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let served: Value = serde_json::from_str(&rsp.text).unwrap();
        assert!(
            served == file,
            "GET /openapi.json differs from openapi.json on disk"
        );
    }
}

#[test]
fn every_route_of_the_router_is_in_the_document() {
    let doc = checked_in();
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = router_routes();
    assert!(
        routes.len() >= 10,
        "parsed too few routes from src/http/router.rs: {routes:?}"
    );
    assert!(routes.contains(&("/openapi.json".to_owned(), "get".to_owned())));
    let paths = doc["paths"].as_object().unwrap();
    let mut missing = Vec::new();
    for (path, method) in &routes {
        if paths.get(path).and_then(|p| p.get(method)).is_none() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
}

#[test]
fn every_operation_has_examples_and_unique_ids() {
    let doc = checked_in();
    let mut ids = BTreeSet::new();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                ops.push((format!("{method} {path}"), op));
            }
        }
    }
    for (hook, item) in doc["webhooks"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((format!("webhook {hook} {method}"), op));
        }
    }
    for (name, op) in ops {
        let id = op["operationId"].as_str().unwrap().to_owned();
        assert!(ids.insert(id.clone()), "duplicate operationId {id}");
        let mut media = Vec::new();
        if let Some(body) = op.get("requestBody") {
            for (mt, m) in resolve(&doc, body)["content"].as_object().unwrap() {
                media.push((format!("{name} request {mt}"), m));
            }
        }
        for (status, rsp) in op["responses"].as_object().unwrap() {
            if let Some(content) = resolve(&doc, rsp).get("content") {
                for (mt, m) in content.as_object().unwrap() {
                    media.push((format!("{name} {status} {mt}"), m));
                }
            }
        }
        for (where_, m) in media {
            let n = m
                .get("examples")
                .and_then(Value::as_object)
                .map_or(0, |e| e.len());
            assert!(n > 0, "{where_}: no example");
        }
    }
}

/// The codes of `ProblemCode::as_str` in src/error.rs.
fn problem_codes_in_source() -> BTreeSet<String> {
    let src = repo_file("src/error.rs");
    let start = src.find("pub fn as_str").expect("ProblemCode::as_str");
    let body = &src[start..];
    let end = body[1..].find("pub fn").map_or(body.len(), |e| e + 1);
    body[..end]
        .lines()
        .filter_map(|l| l.split_once("=> \""))
        .map(|(_, rest)| rest.trim_end_matches([',', '"']).to_owned())
        .collect()
}

#[test]
fn every_problem_code_has_an_example_with_its_status() {
    let doc = checked_in();
    let codes = problem_codes_in_source();
    assert!(codes.len() >= 25, "parsed too few codes: {codes:?}");
    let documented: BTreeSet<String> = doc["components"]["schemas"]["ProblemCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(documented, codes, "ProblemCode enum vs src/error.rs");
    let types: BTreeSet<String> = doc["components"]["schemas"]["Problem"]["properties"]["type"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = codes
        .iter()
        .map(|c| format!("urn:samgate:problem:{c}"))
        .collect();
    assert_eq!(types, want, "Problem.type enum vs src/error.rs");

    // code -> the one status it is documented with.
    let mut seen = std::collections::BTreeMap::<String, String>::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for (status, rsp) in responses {
                let Some(m) = resolve(&doc, rsp).pointer("/content/application~1problem+json")
                else {
                    continue;
                };
                assert_eq!(
                    resolve(&doc, &m["schema"]),
                    &doc["components"]["schemas"]["Problem"]
                );
                for ex in m["examples"].as_object().unwrap().values() {
                    let v = &resolve(&doc, ex)["value"];
                    let code = v["code"].as_str().unwrap().to_owned();
                    assert_eq!(v["status"].to_string(), *status, "{code}");
                    assert_eq!(v["type"], format!("urn:samgate:problem:{code}"));
                    let prev = seen.insert(code.clone(), status.clone());
                    assert!(
                        prev.is_none_or(|p| p == *status),
                        "{code} documented with two statuses"
                    );
                }
            }
        }
    }
    let seen_codes: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(seen_codes, codes, "codes without a documented response");
}

#[test]
fn the_message_schemas_are_embedded_verbatim() {
    let doc = checked_in();
    let components = doc["components"]["schemas"].as_object().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let embedded = components
            .values()
            .find(|s| s.get("$id").is_some() && s["$id"] == file["$id"])
            .unwrap_or_else(|| panic!("{} is not in components.schemas", path.display()));
        assert!(
            *embedded == file,
            "{} differs from its copy in openapi.json",
            path.display()
        );
        n += 1;
    }
    assert_eq!(n, 9, "one schema per message type");
}
