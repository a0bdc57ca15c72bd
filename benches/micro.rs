//! Criterion micro-benchmarks of the per-exchange hot functions (issue 7):
//! personnummer parsing, pseudonym derivation, consent verification (cold),
//! schema validation + field filter per message type, the audit leaf hash
//! and the detached delivery signature. The audit append itself (database,
//! batch sizes) is measured in `benches/audit_append.rs`.
//!
//! `cargo bench --bench micro`

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use samgate::audit::merkle;
use samgate::audit::record::{Action, AuditRecord, Decision};
use samgate::config::Config;
use samgate::consent::verify::ConsentVerifier;
use samgate::keys::Secret32;
use samgate::policy::{self, FilterInput};
use samgate::schema::Category;
use samgate::schema::SchemaRegistry;
use samgate::subject::personnummer::Personnummer;
use samgate::subject::pseudonym::{Party, PseudonymMaster};
use serde_json::Value;

const PNR: &str = "200203149828";

/// The date numbers are parsed on (DOMAIN §7: mid-2026).
const TODAY: time::Date = time::macros::date!(2026 - 06 - 15);

fn personnummer(c: &mut Criterion) {
    let mut g = c.benchmark_group("personnummer_parse");
    for s in ["200203149828", "20020314-9828", "020314-9828"] {
        g.bench_with_input(BenchmarkId::from_parameter(s), s, |b, s| {
            b.iter(|| Personnummer::parse_at(black_box(s), TODAY))
        });
    }
    g.finish();
}

fn pseudonym(c: &mut Criterion) {
    let master = PseudonymMaster::new(Secret32::new([7; 32]));
    let Ok(p) = Personnummer::parse_at(PNR, TODAY) else {
        return;
    };
    let Ok(dk) = master.domain("fk") else { return };
    c.bench_function("pseudonym/derived_domain_key", |b| {
        b.iter(|| dk.pseudonymise::<Party>(black_box(&p)))
    });
    c.bench_function("pseudonym/derive_key_and_pseudonymise", |b| {
        b.iter(|| master.pseudonymise::<Party>(black_box("fk"), black_box(&p)))
    });
}

fn consent_verify(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else { return };
    if samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).is_err() {
        return;
    }
    let Ok(config) = Config::load(&dir.path().join("samgate.toml")) else {
        return;
    };
    let Ok(verifier) = ConsentVerifier::from_config(&config) else {
        return;
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "the benchmark signs a consent valid from the real time"
    )]
    let now = time::OffsetDateTime::now_utc();
    let args = samgate::cli::ConsentSignArgs {
        key: dir.path().join("keys/issuer-sfk-kalmar-intake.pem"),
        issuer: "sfk-kalmar-intake".into(),
        key_id: "2026-1".into(),
        subject: PNR.into(),
        parties: vec!["fk".into(), "af".into(), "kommun-kalmar".into()],
        purposes: vec!["samordnad-rehabilitering".into()],
        categories: vec!["case".into(), "health".into(), "attendance".into()],
        days: 365,
        method: "written".into(),
        recorded_by: "handlaggare.eva".into(),
        given_by: None,
        protected_identity: false,
    };
    let Ok(token) = samgate::consent::cli::sign_consent(&args, now.unix_timestamp()) else {
        return;
    };
    c.bench_function("consent_verify/cold", |b| {
        b.iter(|| verifier.verify(black_box(&token), now).is_ok())
    });
}

fn schema_and_filter(c: &mut Criterion) {
    let Ok(registry) = SchemaRegistry::builtin() else {
        return;
    };
    let all: BTreeSet<Category> = Category::ALL.into_iter().collect();
    let allow = vec!["*".to_owned()];
    let types: Vec<String> = registry.types().map(str::to_owned).collect();
    let mut g = c.benchmark_group("schema_validate_and_filter");
    for t in &types {
        let (Some(schema), Some(example)) = (registry.get(t), samgate::schema::builtin_example(t))
        else {
            continue;
        };
        let Ok(payload) = serde_json::from_str::<Value>(example) else {
            continue;
        };
        g.bench_with_input(BenchmarkId::new("validate", t), &payload, |b, payload| {
            b.iter(|| schema.validate(black_box(payload)).is_ok())
        });
        g.bench_with_input(BenchmarkId::new("filter", t), &payload, |b, payload| {
            b.iter(|| {
                let mut ident = |p: &Personnummer| Some(p.expose().to_owned());
                policy::filter(
                    FilterInput {
                        schema,
                        payload: black_box(payload),
                        allow: &allow,
                        consent_categories: Some(&all),
                        today: TODAY,
                    },
                    &mut ident,
                )
                .is_ok()
            })
        });
    }
    g.finish();
}

fn audit_leaf(c: &mut Criterion) {
    let record = AuditRecord {
        seq: 123_456,
        time: "2026-01-15T10:11:12.123456Z".into(),
        request_id: Some("8d3c1d0e-0d4f-4b59-9d61-1d2b1f4e2a10".into()),
        actor_party: Some("kommun-kalmar".into()),
        from: Some("kommun-kalmar".into()),
        to: Some("fk".into()),
        msg_type: Some("rehabilitation-plan".into()),
        purpose: Some("samordnad-rehabilitering".into()),
        subject: Some("ps1_0123456789abcdefghijklmnopqrstuv".into()),
        consent_id: Some("3f0e7a52-1c1b-4f3e-8f1d-2a9b7c6d5e4f".into()),
        exchange_id: Some("01a208cd-8578-7426-a105-a49f24a17696".into()),
        forwarded: vec!["/goal".into(), "/plan_date".into(), "/sub_goals".into()],
        withheld: vec!["/clinical_notes".into()],
        payload_sha256: Some("ab".repeat(32)),
        ..AuditRecord::new(Action::ExchangeForwarded, Decision::Permit)
    };
    c.bench_function("audit/leaf_bytes", |b| {
        b.iter(|| black_box(&record).leaf_bytes())
    });
    let leaf = record.leaf_bytes();
    c.bench_function("audit/leaf_hash", |b| {
        b.iter(|| merkle::leaf_hash(black_box(&leaf)))
    });
    c.bench_function("audit/leaf_bytes_and_hash", |b| {
        b.iter(|| merkle::leaf_hash(&black_box(&record).leaf_bytes()))
    });
}

fn detached_signature(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else { return };
    if samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).is_err() {
        return;
    }
    let Ok(signer) = samgate::keys::load_ed25519_private(&dir.path().join("keys/delivery.pem"))
    else {
        return;
    };
    let body = vec![b'x'; 1024];
    c.bench_function("delivery/sign_detached_1KiB", |b| {
        b.iter(|| samgate::exchange::deliver::sign_detached(&signer, black_box(&body)))
    });
}

criterion_group!(
    benches,
    personnummer,
    pseudonym,
    consent_verify,
    schema_and_filter,
    audit_leaf,
    detached_signature
);
criterion_main!(benches);
