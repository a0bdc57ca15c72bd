//! Operator-facing observation (issue #19): the start-up log line and the
//! gauges refreshed on every `/metrics` scrape.
//!
//! Names follow Prometheus conventions (base units, `_seconds`, `_total`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `samgate_build_info` | gauge (1) | `version` |
//! | `samgate_outbox_depth` | gauge | |
//! | `samgate_outbox_oldest_age_seconds` | gauge | |
//! | `samgate_delivery_duration_seconds` | histogram | `recipient`, `delivery` |
//! | `samgate_delivery_failures_total` | counter | `recipient`, `delivery`, `reason` |
//! | `samgate_audit_tree_size` | gauge | |
//! | `samgate_audit_checkpoint_age_seconds` | gauge | |
//! | `samgate_certificate_expiry_seconds` | gauge (seconds left, negative once expired) | `file` |
//! | `samgate_config_reloads_total` | counter | `result` (`success`, `refused`) |
//!
//! The gauges are computed when scraped (a few indexed queries), so they
//! never lag. No label value is ever empty: an unknown recipient is
//! `unknown`.

use std::time::Duration;

use crate::state::AppState;

/// Logs one line at start: version, deployment, backend, key ids and the
/// size of the configuration (never a key or a personnummer).
pub fn log_start(state: &AppState) {
    let live = state.current_live();
    let (parties, routes, users, issuers) = live.counts();
    let previous = state.crypto.vault.previous_key_ids().join(",");
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        deployment_id = %state.config.server.deployment_id,
        backend = ?state.store.backend(),
        pseudonym_key_id = state.crypto.pseudonym_key_id(),
        vault_key_id = state.crypto.vault.key_id(),
        vault_previous_key_ids = %if previous.is_empty() { "none".to_owned() } else { previous },
        audit_key_id = state.crypto.audit_signer.key_id(),
        delivery_key_id = state.crypto.delivery_signer.key_id(),
        parties,
        routes,
        users,
        consent_issuers = issuers,
        "samgate started"
    );
}

/// Records one delivery attempt's latency and, when it failed, its reason.
pub fn delivery<T, E: std::fmt::Display>(
    recipient: Option<&str>,
    mode: &'static str,
    elapsed: Duration,
    result: &Result<T, E>,
) {
    let recipient = recipient
        .filter(|r| !r.is_empty())
        .unwrap_or("unknown")
        .to_owned();
    metrics::histogram!(
        "samgate_delivery_duration_seconds",
        "recipient" => recipient.clone(),
        "delivery" => mode
    )
    .record(elapsed.as_secs_f64());
    if let Err(e) = result {
        let text = e.to_string();
        let reason = if text.contains("HTTP") {
            "status"
        } else if text.contains("sealed") {
            "unsealable"
        } else if text.contains("not configured") {
            "not_configured"
        } else {
            "transport"
        };
        metrics::counter!(
            "samgate_delivery_failures_total",
            "recipient" => recipient,
            "delivery" => mode,
            "reason" => reason
        )
        .increment(1);
    }
}

/// Refreshes the gauges (called by `/metrics` before rendering).
pub async fn refresh(state: &AppState) {
    metrics::gauge!("samgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let now_us = state.clock.now_us();
    let age = |t_us: i64| ((now_us - t_us).max(0) as f64) / 1e6;
    let pool = state.store.pool();
    let outbox: Result<(i64, Option<i64>), _> = sqlx::query_as(
        "SELECT COUNT(*), MIN(e.created_at_us) FROM outbox o JOIN exchanges e ON e.id = o.exchange_id",
    )
    .fetch_one(pool)
    .await;
    if let Ok((depth, oldest)) = outbox {
        metrics::gauge!("samgate_outbox_depth").set(depth as f64);
        metrics::gauge!("samgate_outbox_oldest_age_seconds").set(oldest.map_or(0.0, age));
    }
    let head: Result<Option<(i64, i64)>, _> =
        sqlx::query_as("SELECT tree_size, time_us FROM tree_heads ORDER BY tree_size DESC LIMIT 1")
            .fetch_optional(pool)
            .await;
    if let Ok(head) = head {
        let (size, time) = head.map_or((0, None), |(s, t)| (s, Some(t)));
        metrics::gauge!("samgate_audit_tree_size").set(size as f64);
        if let Some(t) = time {
            metrics::gauge!("samgate_audit_checkpoint_age_seconds").set(age(t));
        }
    }
    let now_s = now_us / 1_000_000;
    for (key, path) in crate::check::certificate_files(&state.config) {
        if let Ok(not_after) = crate::check::earliest_not_after(&path) {
            metrics::gauge!("samgate_certificate_expiry_seconds", "file" => key)
                .set((not_after - now_s) as f64);
        }
    }
}
