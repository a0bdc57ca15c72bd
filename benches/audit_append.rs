//! Durable audit appends per second on SQLite (WAL, synchronous=FULL) with
//! concurrent appenders: the group-commit writer of `audit/log.rs` turns
//! many waiting appends into one transaction and one fsync.
//!
//! Run: `cargo bench --bench audit_append`. Each iteration is `TASKS`
//! appenders doing `PER_TASK` appends each; throughput is in records.
#![expect(clippy::unwrap_used, reason = "a failed setup is a failed benchmark")]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use samgate::audit::record::{Action, AuditRecord, Decision};
use samgate::config::Config;
use samgate::state::AppState;

const PER_TASK: usize = 16;

fn record() -> AuditRecord {
    AuditRecord {
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        actor_party: Some("af".into()),
        from: Some("af".into()),
        to: Some("fk".into()),
        msg_type: Some("attendance-report".into()),
        purpose: Some("samordnad-rehabilitering".into()),
        subject: Some("ps1_aaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
        exchange_id: Some(uuid::Uuid::new_v4().to_string()),
        forwarded: vec!["/attended_hours".into(), "/period".into()],
        payload_sha256: Some("00".repeat(32)),
        ..AuditRecord::new(Action::ExchangeForwarded, Decision::Permit)
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    samgate::init::init(dir.path(), &samgate::init::InitOptions::default()).unwrap();
    let mut config = Config::load(&dir.path().join("samgate.toml")).unwrap();
    config.storage.url = format!("sqlite://{}", dir.path().join("data/bench.db").display());
    let state = rt.block_on(AppState::build(config)).unwrap();

    let mut group = c.benchmark_group("audit_append_sqlite");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for tasks in [1usize, 64] {
        group.throughput(Throughput::Elements((tasks * PER_TASK) as u64));
        group.bench_function(format!("{tasks}_appenders"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let state = state.clone();
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut handles = Vec::with_capacity(tasks);
                        for _ in 0..tasks {
                            let state = state.clone();
                            handles.push(tokio::spawn(async move {
                                for _ in 0..PER_TASK {
                                    state.audit.append(record(), vec![]).await.unwrap();
                                }
                            }));
                        }
                        for h in handles {
                            h.await.unwrap();
                        }
                    }
                    start.elapsed()
                }
            });
        });
    }
    group.finish();
    rt.block_on(state.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
