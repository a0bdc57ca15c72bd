//! `AppState`: everything a handler needs, built once at start from a
//! validated [`Config`] and shared (cheaply cloned) across requests.

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::log::{AuditLog, HeadSigner};
use crate::auth::jwt::{PublicKeyFile, UserTokenVerifier};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, PartyConfig, PartyId};
use crate::consent::verify::ConsentVerifier;
use crate::crypto::Crypto;
use crate::schema::SchemaRegistry;
use crate::store::{Store, StoreError};

/// Why the gateway could not start (exit code 2 for config problems).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A key or certificate file is unusable.
    #[error("{key}: {reason}")]
    Key {
        /// Config key.
        key: String,
        /// Reason.
        reason: String,
    },
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Most vault keys remembered by [`AppState::mark_vault_stored`].
pub const VAULT_CACHE_MAX: usize = 100_000;

/// Shared application state.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The contents of [`AppState`].
pub struct Inner {
    /// The validated configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    pins: HashMap<[u8; 32], usize>,
    verifiers: HashMap<PartyId, UserTokenVerifier>,
    /// Per-party rate limiter (None = off).
    pub rate_limiter: Option<crate::http::PartyRateLimiter>,
    /// Key material.
    pub crypto: Crypto,
    /// Compiled message schemas.
    pub schemas: SchemaRegistry,
    /// Consent issuers.
    pub consents: ConsentVerifier,
    /// The audit log writer.
    pub audit: AuditLog,
    /// This process's id (outbox claims are recorded with it).
    pub instance_id: String,
    /// The outbound HTTPS clients towards recipients (pooled, pinned per
    /// recipient): pick one with `for_delivery`.
    pub delivery_client: crate::exchange::deliver::Clients,
    /// Wakes the outbox worker when an async exchange is committed.
    pub outbox_notify: tokio::sync::Notify,
    /// Wakes the outbox dispatcher when an attempt has finished (a worker
    /// or a per-recipient slot is free again).
    pub outbox_freed: tokio::sync::Notify,
    audit_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Vault rows (`domain\0pseudonym`) known to be stored: rows are never
    /// deleted, so a positive entry cannot go stale. Bounded.
    vault_stored: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Background tasks stopped on shutdown (the outbox worker).
    pub background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Builds the state: opens and migrates storage, loads keys.
    pub async fn build(config: Config) -> Result<AppState, StartError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`AppState::build`] with an injected clock (tests).
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, StartError> {
        let mut pins = HashMap::new();
        let mut verifiers = HashMap::new();
        for (i, p) in config.parties.iter().enumerate() {
            pins.insert(p.certificate_sha256, i);
            if let Some(j) = &p.jwt_issuer {
                let key = format!("party[{i}].jwt_issuer.public_key");
                let file = PublicKeyFile::load(&j.public_key).map_err(|e| StartError::Key {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                let v = UserTokenVerifier::new(&j.iss, &j.audience, &file, j.key_id.as_deref())
                    .map_err(|e| StartError::Key {
                        key,
                        reason: e.to_string(),
                    })?;
                verifiers.insert(p.id.clone(), v);
            }
        }
        let _ = crate::http::metrics_handle();
        let crypto = Crypto::load(&config)?;
        let schemas = SchemaRegistry::builtin().map_err(|e| StartError::Key {
            key: "schemas".into(),
            reason: e.to_string(),
        })?;
        let consents = ConsentVerifier::from_config(&config).map_err(|reason| StartError::Key {
            key: "consent_issuer".into(),
            reason,
        })?;
        let delivery_client = crate::exchange::deliver::clients(&config)?;
        let store = Store::open(&config.storage).await?;
        let rate_limiter = crate::http::PartyRateLimiter::new(config.server.rate_limit_per_party);
        let signer = Arc::new(HeadSigner {
            origin: format!("samgate/{}", config.server.deployment_id),
            key: crypto.audit_signer.clone(),
        });
        let (audit, audit_task) = AuditLog::start(
            store.clone(),
            clock.clone(),
            signer,
            config.audit.max_batch,
            config.audit.checkpoint_interval,
        );
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                store,
                clock,
                pins,
                verifiers,
                rate_limiter,
                crypto,
                schemas,
                consents,
                audit,
                instance_id: uuid::Uuid::new_v4().to_string(),
                delivery_client,
                outbox_notify: tokio::sync::Notify::new(),
                outbox_freed: tokio::sync::Notify::new(),
                audit_task: std::sync::Mutex::new(Some(audit_task)),
                background: std::sync::Mutex::new(Vec::new()),
                vault_stored: std::sync::RwLock::new(std::collections::HashSet::new()),
            }),
        })
    }

    /// The party a certificate pin belongs to.
    pub fn party_by_pin(&self, pin: &[u8; 32]) -> Option<&PartyConfig> {
        self.pins.get(pin).and_then(|i| self.config.parties.get(*i))
    }

    /// Finishes background work on a graceful stop (final tree head).
    pub async fn shutdown(&self) {
        self.abort_background();
        let _ = self.audit.sign_head().await;
        self.store.close().await;
    }

    /// Aborts the background tasks (the outbox worker).
    fn abort_background(&self) {
        let tasks: Vec<_> = self
            .background
            .lock()
            .map(|mut v| v.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
    }

    /// Stops background work at once (crash simulation in tests).
    pub fn abort(&self) {
        self.abort_background();
        if let Ok(mut t) = self.audit_task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }

    /// Whether this vault row is known to be stored.
    pub fn vault_is_stored(&self, key: &str) -> bool {
        self.vault_stored
            .read()
            .map(|s| s.contains(key))
            .unwrap_or(false)
    }

    /// Remembers committed vault rows (the set is cleared when it reaches
    /// [`VAULT_CACHE_MAX`] entries; a miss only costs an idempotent insert).
    pub fn mark_vault_stored(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        if let Ok(mut set) = self.vault_stored.write() {
            if set.len() + keys.len() > VAULT_CACHE_MAX {
                set.clear();
            }
            set.extend(keys);
        }
    }

    /// The user-token verifier of a party, if it has an issuer.
    pub fn user_verifier(&self, party: &PartyId) -> Option<&UserTokenVerifier> {
        self.verifiers.get(party)
    }
}
