//! `AppState`: everything a handler needs, built once at start from a
//! validated [`Config`] and shared (cheaply cloned) across requests.

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::log::{AuditLog, HeadSigner};
use crate::auth::jwt::{PublicKeyFile, UserTokenVerifier};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, PartyConfig};
use crate::consent::verify::ConsentVerifier;
use crate::crypto::Crypto;
use crate::party::PartyId;
use crate::schema::SchemaRegistry;
use crate::startup::StartError;
use crate::store::Store;

/// Most vault keys remembered by [`AppState::mark_vault_stored`].
pub const VAULT_CACHE_MAX: usize = 100_000;

tokio::task_local! {
    /// The snapshot of the request being served on this task: set by the
    /// authentication middleware around the rest of the request
    /// ([`crate::http`]), read by [`AppState::live`] of every other clone of
    /// the state the request uses (its handler's extractor clones its own).
    pub static REQUEST_LIVE: Arc<Live>;
}

/// Shared application state.
///
/// Cloning is cheap. The reloadable part ([`Live`]) is read
/// once per request: the first [`AppState::live`] on a value pins the
/// snapshot current at that moment, and clones of a pinned value keep it
/// (tasks spawned for the request stay on its configuration), while clones
/// of an unpinned value start unpinned. axum clones the router's (never
/// pinned) state for every request, so each request gets its own snapshot.
pub struct AppState {
    inner: Arc<Inner>,
    pinned: std::sync::OnceLock<Arc<Live>>,
}

impl Clone for AppState {
    fn clone(&self) -> Self {
        let pinned = std::sync::OnceLock::new();
        if let Some(live) = self.pinned.get() {
            let _ = pinned.set(live.clone());
        }
        AppState {
            inner: self.inner.clone(),
            pinned,
        }
    }
}

/// The contents of [`AppState`].
pub struct Inner {
    /// The configuration the process started with. Its parties, routes and
    /// consent issuers are not reloaded here: use [`AppState::live`].
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The reloadable part (SIGHUP, [`crate::reload`]).
    live: arc_swap::ArcSwap<Live>,
    /// Per-party rate limiter (None = off).
    pub rate_limiter: Option<crate::http::ratelimit::PartyRateLimiter>,
    /// Key material.
    pub crypto: Crypto,
    /// Compiled message schemas.
    pub schemas: SchemaRegistry,
    /// The audit log writer.
    pub audit: AuditLog,
    /// This process's id (outbox claims are recorded with it).
    pub instance_id: String,
    /// Wakes the outbox worker when an async exchange is committed.
    pub outbox_notify: tokio::sync::Notify,
    /// Wakes the outbox dispatcher when an attempt has finished (a worker
    /// or a per-recipient slot is free again).
    pub outbox_freed: tokio::sync::Notify,
    audit_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Vault rows (`domain\0pseudonym`) known to be stored: rows are never
    /// deleted, so a positive entry cannot go stale. Bounded.
    vault_stored: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Each subject's consents for the exchange path, guarded by their
    /// versions (see [`crate::consent::cache`]).
    pub consent_cache: crate::consent::cache::ConsentCache,
    /// The browser console's keys (DESIGN §11).
    pub console: crate::console::keys::ConsoleState,
    /// Background tasks stopped on shutdown (the outbox worker).
    pub background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set by [`AppState::abort`].
    halted: std::sync::atomic::AtomicBool,
    /// The witnesses that cosign tree heads (DESIGN §12).
    pub witnesses: crate::witness::client::Cosigning,
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
        let delivery_clients = crate::exchange::deliver::Clients::build(&config, &config, None)?;
        let live =
            Live::build(Arc::new(config.clone()), 0, delivery_clients).map_err(|reasons| {
                let (key, reason) = reasons
                    .first()
                    .and_then(|r| r.split_once(": "))
                    .map_or(("config".to_owned(), reasons.join("; ")), |(k, r)| {
                        (k.to_owned(), r.to_owned())
                    });
                StartError::Key { key, reason }
            })?;
        let console = crate::console::keys::ConsoleState::load(&config).map_err(|reason| {
            StartError::Key {
                key: "console.signing_key".into(),
                reason,
            }
        })?;
        let _ = crate::telemetry::metrics_handle();
        let crypto = Crypto::load(&config)?;
        let schemas = SchemaRegistry::builtin().map_err(|e| StartError::Key {
            key: "schemas".into(),
            reason: e.to_string(),
        })?;
        let witnesses =
            crate::witness::client::Cosigning::from_config(&config).map_err(|reason| {
                StartError::Key {
                    key: "witness".into(),
                    reason,
                }
            })?;
        let store = Store::open(&config.storage).await?;
        let rate_limiter =
            crate::http::ratelimit::PartyRateLimiter::new(config.server.rate_limit_per_party);
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
                live: arc_swap::ArcSwap::from_pointee(live),
                console,
                rate_limiter,
                crypto,
                schemas,
                audit,
                instance_id: uuid::Uuid::new_v4().to_string(),
                outbox_notify: tokio::sync::Notify::new(),
                outbox_freed: tokio::sync::Notify::new(),
                audit_task: std::sync::Mutex::new(Some(audit_task)),
                background: std::sync::Mutex::new(Vec::new()),
                halted: std::sync::atomic::AtomicBool::new(false),
                vault_stored: std::sync::RwLock::new(std::collections::HashSet::new()),
                consent_cache: crate::consent::cache::ConsentCache::default(),
                witnesses,
            }),
            pinned: std::sync::OnceLock::new(),
        })
    }

    /// This request's snapshot of the reloadable configuration (parties,
    /// routes, users, consent issuers): the first call pins the current one
    /// (see the type's docs).
    pub fn live(&self) -> &Live {
        self.pinned.get_or_init(|| {
            // Inside a request, the snapshot the authentication middleware
            // pinned (so the principal and the routes come from one
            // configuration); elsewhere the current one.
            REQUEST_LIVE
                .try_with(Arc::clone)
                .unwrap_or_else(|_| self.inner.live.load_full())
        })
    }

    /// The snapshot this value reads (pins it now if it is not yet).
    pub fn live_arc(&self) -> Arc<Live> {
        self.live();
        self.pinned
            .get()
            .cloned()
            .unwrap_or_else(|| self.inner.live.load_full())
    }

    /// The current snapshot, without pinning (background work, tests).
    pub fn current_live(&self) -> Arc<Live> {
        self.inner.live.load_full()
    }

    /// A clone that is not pinned: it reads the snapshot current at its
    /// first [`AppState::live`]. For long-lived holders (routers, workers).
    pub fn unpinned(&self) -> AppState {
        AppState {
            inner: self.inner.clone(),
            pinned: std::sync::OnceLock::new(),
        }
    }

    /// Installs a new snapshot ([`crate::reload::reload`]); requests already
    /// running keep theirs.
    pub fn install_live(&self, live: Live) {
        self.inner.live.store(Arc::new(live));
    }

    /// The party a certificate pin belongs to ([`Live::party_by_pin`]).
    pub fn party_by_pin(&self, pin: &[u8; 32]) -> Option<&PartyConfig> {
        self.live().party_by_pin(pin)
    }

    /// The `[[user]]` of a personal certificate pin ([`Live::user_by_pin`]).
    pub fn user_by_pin(&self, pin: &[u8; 32]) -> Option<&crate::config::UserConfig> {
        self.live().user_by_pin(pin)
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
        self.halted.store(true, std::sync::atomic::Ordering::SeqCst);
        self.abort_background();
        if let Ok(mut t) = self.audit_task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }

    /// True after [`AppState::abort`]: outbox attempts already spawned send
    /// nothing more.
    pub fn is_halted(&self) -> bool {
        self.halted.load(std::sync::atomic::Ordering::SeqCst)
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
        self.live().verifiers.get(party)
    }
}

/// The reloadable part of the state: one consistent snapshot.
pub struct Live {
    /// The configuration this snapshot was built from. Only its parties,
    /// routes and consent issuers are live; the other sections are those of
    /// the running process ([`crate::state::Inner::config`]).
    pub config: Arc<Config>,
    /// Certificate pin → index into `config.parties`.
    pub pins: HashMap<[u8; 32], usize>,
    /// Personal certificate pin → index into `config.users` (DESIGN §11).
    pub user_pins: HashMap<[u8; 32], usize>,
    /// User-token verifiers of the parties that have a `jwt_issuer`.
    pub verifiers: HashMap<PartyId, UserTokenVerifier>,
    /// Consent issuers.
    pub consents: ConsentVerifier,
    /// Counts the reloads so far (0 = the start-up configuration).
    pub generation: u64,
    /// The outbound HTTPS clients towards this snapshot's recipients
    /// (pooled, pinned per recipient): pick one with `for_delivery`.
    pub delivery_clients: crate::exchange::deliver::Clients,
}

impl Live {
    /// Builds a snapshot: loads the issuers' public keys. Every problem is
    /// returned, each as `key: reason`.
    pub fn build(
        config: Arc<Config>,
        generation: u64,
        delivery_clients: crate::exchange::deliver::Clients,
    ) -> Result<Live, Vec<String>> {
        let mut problems = Vec::new();
        let mut pins = HashMap::new();
        let mut verifiers = HashMap::new();
        for (i, p) in config.parties.iter().enumerate() {
            pins.insert(p.certificate_sha256, i);
            if let Some(j) = &p.jwt_issuer {
                let key = format!("party[{i}].jwt_issuer.public_key");
                match PublicKeyFile::load(&j.public_key)
                    .map_err(|e| e.to_string())
                    .and_then(|file| {
                        UserTokenVerifier::new(&j.iss, &j.audience, &file, j.key_id.as_deref())
                            .map_err(|e| e.to_string())
                    }) {
                    Ok(v) => {
                        verifiers.insert(p.id.clone(), v);
                    }
                    Err(reason) => problems.push(format!("{key}: {reason}")),
                }
            }
        }
        let consents = match ConsentVerifier::from_config(&config) {
            Ok(c) => Some(c),
            Err(reason) => {
                problems.push(reason);
                None
            }
        };
        match consents {
            Some(consents) if problems.is_empty() => Ok(Live {
                user_pins: config
                    .users
                    .iter()
                    .enumerate()
                    .map(|(i, u)| (u.certificate_sha256, i))
                    .collect(),
                config,
                pins,
                verifiers,
                consents,
                generation,
                delivery_clients,
            }),
            _ => Err(problems),
        }
    }

    /// The party a certificate pin belongs to.
    pub fn party_by_pin(&self, pin: &[u8; 32]) -> Option<&PartyConfig> {
        self.pins.get(pin).and_then(|i| self.config.parties.get(*i))
    }

    /// The `[[user]]` a personal certificate pin belongs to (DESIGN §11).
    pub fn user_by_pin(&self, pin: &[u8; 32]) -> Option<&crate::config::UserConfig> {
        self.user_pins
            .get(pin)
            .and_then(|i| self.config.users.get(*i))
    }

    /// Parties, routes, users (parties with a jwt_issuer) and consent issuers.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.config.parties.len(),
            self.config.routes.len(),
            self.verifiers.len(),
            self.config.consent_issuers.len(),
        )
    }
}
