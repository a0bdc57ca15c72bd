//! Configuration reload on SIGHUP (issue #19).
//!
//! What reloads: parties (pins, endpoints, roles), console users, routes, consent issuers
//! and each party's user-token issuer (its `jwt_issuer`). What does not:
//! `[server]` (listen addresses, TLS material), `[storage]`, `[keys]`,
//! `[audit]`, `[delivery]` and `[consent]`: those need a restart, and a
//! reload that changes them applies the rest and logs which were ignored.
//!
//! The reloadable part is one immutable [`Live`](crate::state::Live) behind an
//! [`arc_swap::ArcSwap`] in the state. A request reads it once (the first
//! [`AppState::live`] of the request pins it, see there) and finishes on
//! it, so an in-flight exchange is never decided half on the old routes and
//! half on the new. Async deliveries already carry their endpoint in the
//! outbox row. A file that does not load, does not validate or names a key
//! that does not load is refused as a whole with its reasons (logged) and
//! the running configuration stays; `samgate_config_reloads_total{result}`
//! counts both outcomes.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::state::{AppState, Live};

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// Parties in the new configuration.
    pub parties: usize,
    /// Routes in the new configuration.
    pub routes: usize,
    /// Sections that changed but only take effect after a restart.
    pub ignored: Vec<&'static str>,
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration reload refused; the running configuration stays:\n  {}", reasons.join("\n  "))]
pub struct Refused {
    /// Every reason, one per problem.
    pub reasons: Vec<String>,
}

/// Reloads the configuration file at `path` into the running state: the
/// function SIGHUP calls. Logs and counts the outcome.
pub fn reload(state: &AppState, path: &Path) -> Result<Reloaded, Refused> {
    let result = try_reload(state, path);
    match &result {
        Ok(r) => {
            metrics::counter!("samgate_config_reloads_total", "result" => "success").increment(1);
            tracing::info!(
                generation = r.generation,
                parties = r.parties,
                routes = r.routes,
                "configuration reloaded"
            );
            for section in &r.ignored {
                tracing::warn!(
                    section = *section,
                    "configuration section changed; it takes effect only after a restart"
                );
            }
        }
        Err(e) => {
            metrics::counter!("samgate_config_reloads_total", "result" => "refused").increment(1);
            for reason in &e.reasons {
                tracing::error!(reason = %reason, "configuration reload refused");
            }
        }
    }
    result
}

fn try_reload(state: &AppState, path: &Path) -> Result<Reloaded, Refused> {
    let config = Config::load(path).map_err(|e| Refused {
        reasons: match e {
            crate::config::ConfigError::Invalid { issues, .. } => issues
                .into_iter()
                .map(|i| format!("{}: {}", i.key, i.reason))
                .collect(),
            other => vec![other.to_string()],
        },
    })?;
    let running = &state.config;
    let ignored = restart_only_changes(running, &config);
    let generation = state.current_live().generation + 1;
    // The recipients' pinned clients follow the new parties (a changed or
    // new pin must hold from the first delivery after the reload).
    let clients = crate::exchange::deliver::Clients::build(
        running,
        &config,
        Some(&state.current_live().delivery_clients),
    )
    .map_err(|e| Refused {
        reasons: vec![e.to_string()],
    })?;
    let live = Live::build(Arc::new(config), generation, clients)
        .map_err(|reasons| Refused { reasons })?;
    // A new party needs its pseudonym domain before a request can name it.
    state
        .crypto
        .add_domains(live.config.parties.iter().map(|p| p.id.as_str()))
        .map_err(|e| Refused {
            reasons: vec![format!("keys.pseudonym_master: {e}")],
        })?;
    let (parties, routes, _, _) = live.counts();
    state.install_live(live);
    Ok(Reloaded {
        generation,
        parties,
        routes,
        ignored,
    })
}

/// Whether any of the named fields differ between `$a` and `$b`.
macro_rules! differ {
    ($a:expr, $b:expr; $($field:ident),+ $(,)?) => {
        $($a.$field != $b.$field)||+
    };
}

/// The sections that differ but are not reloaded.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let sections = [
        ("server.listen", differ!(a, b; listen, metrics_listen)),
        (
            "server (TLS files)",
            differ!(a, b; certificate, private_key, client_ca, outbound_ca,
                outbound_certificate, outbound_private_key),
        ),
        (
            "server",
            differ!(a, b; deployment_id, rate_limit_per_party, shutdown_grace, max_body_bytes),
        ),
        (
            "storage",
            differ!(old.storage, new.storage; url, max_connections, acquire_timeout),
        ),
        (
            "keys",
            differ!(old.keys, new.keys; pseudonym_master, vault, vault_previous, audit_signing,
                delivery_signing),
        ),
        (
            "audit",
            differ!(old.audit, new.audit; checkpoint_interval, max_batch),
        ),
        (
            "delivery",
            differ!(old.delivery, new.delivery; timeout, connect_timeout, expire_after,
                backoff_initial, backoff_max, workers),
        ),
    ];
    sections
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

/// Reloads on every SIGHUP until the process ends (tokio's signal
/// handling; spawned by `samgate serve`).
#[cfg(unix)]
pub fn spawn_on_sighup(
    state: AppState,
    path: std::path::PathBuf,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
            let _ = reload(&state, &path);
        }
    }))
}
