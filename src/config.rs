//! Configuration: TOML file -> raw structs (`deny_unknown_fields`) -> a
//! validated [`Config`] (DESIGN §8.1).
//!
//! Paths in the file are relative to the file's directory. Every problem is
//! reported with the key it concerns and the reason, all at once, and the
//! gateway refuses to start (exit code 2). The config holds key *paths*, never
//! key material: [`crate::keys`] loads and checks the files at start.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::SubjectMode;

use crate::party::{PartyId, PartyKind, Role};
use crate::policy::route::{ConsentRequirement, RouteConfig};

/// A duration written as `"10s"`, `"5m"`, `"24h"` or `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("not a duration like \"10s\": {e}")))
    }
}

/// `[[witness]]` of the gateway configuration.
#[derive(Debug, Clone)]
pub struct WitnessEntry {
    /// The witness's name (the key name of its cosignatures).
    pub name: String,
    /// Its submission prefix; requests go to `<url>/add-checkpoint`.
    pub url: String,
    /// Its public key file: a vkey, or an SPKI PEM Ed25519 key.
    pub public_key: PathBuf,
    /// The CA its server certificate chains to (default: `[server] outbound_ca`).
    pub ca: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// Raw file structure
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    keys: RawKeys,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    consent: RawConsent,
    #[serde(default)]
    consent_issuer: Vec<RawConsentIssuer>,
    #[serde(default)]
    party: Vec<RawParty>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    witness: Vec<RawWitness>,
    #[serde(default)]
    user: Vec<RawUser>,
    #[serde(default)]
    console: Option<RawConsole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    id: String,
    name: String,
    party: String,
    roles: Vec<Role>,
    certificate_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    signing_key: PathBuf,
}

/// `[[witness]]` (DESIGN §12).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitness {
    name: String,
    url: String,
    public_key: PathBuf,
    #[serde(default)]
    ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: SocketAddr,
    #[serde(default)]
    deployment_id: Option<String>,
    certificate: PathBuf,
    private_key: PathBuf,
    client_ca: PathBuf,
    outbound_ca: PathBuf,
    outbound_certificate: PathBuf,
    outbound_private_key: PathBuf,
    #[serde(default)]
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    rate_limit_per_party: Option<u32>,
    #[serde(default)]
    shutdown_grace: Option<HumanDuration>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    header_timeout: Option<HumanDuration>,
    #[serde(default)]
    body_timeout: Option<HumanDuration>,
    #[serde(default)]
    idle_timeout: Option<HumanDuration>,
    #[serde(default)]
    tls_handshake_timeout: Option<HumanDuration>,
    #[serde(default)]
    max_connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: String,
    #[serde(default)]
    max_connections: Option<u32>,
    #[serde(default)]
    acquire_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    pseudonym_master: PathBuf,
    vault: RawVaultKeys,
    audit_signing: PathBuf,
    delivery_signing: PathBuf,
}

/// `[keys] vault`: one key, or a list whose first key seals and all open.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawVaultKeys {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default)]
    checkpoint_interval: Option<HumanDuration>,
    #[serde(default)]
    max_batch: Option<usize>,
    #[serde(default)]
    witness_quorum: Option<usize>,
    #[serde(default)]
    witness_wait: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    connect_timeout: Option<HumanDuration>,
    #[serde(default)]
    expire_after: Option<HumanDuration>,
    #[serde(default)]
    backoff_initial: Option<HumanDuration>,
    #[serde(default)]
    backoff_max: Option<HumanDuration>,
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default)]
    per_recipient: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    #[serde(default)]
    max_lifetime_days: Option<u32>,
    #[serde(default)]
    follow_up_months: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsentIssuer {
    id: String,
    key_id: String,
    public_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParty {
    id: String,
    name: String,
    kind: PartyKind,
    roles: Vec<Role>,
    certificate_sha256: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    endpoint_certificate_sha256: Option<String>,
    #[serde(default)]
    jwt_issuer: Option<RawJwtIssuer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtIssuer {
    iss: String,
    audience: String,
    public_key: PathBuf,
    #[serde(default)]
    key_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    from: Vec<String>,
    to: Vec<String>,
    #[serde(rename = "type")]
    msg_type: String,
    purposes: Vec<String>,
    fields: Vec<String>,
    #[serde(default)]
    subject: SubjectMode,
    #[serde(default)]
    consent: ConsentRequirement,
}

// ---------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------

/// The validated configuration. Tests build it with [`Config::from_toml_str`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory the relative paths were resolved against.
    pub base_dir: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[keys]`, resolved to absolute paths.
    pub keys: KeyPaths,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[delivery]`.
    pub delivery: DeliveryConfig,
    /// `[consent]`.
    pub consent: ConsentConfig,
    /// `[[consent_issuer]]`.
    pub consent_issuers: Vec<ConsentIssuerConfig>,
    /// `[[party]]`, in file order.
    pub parties: Vec<PartyConfig>,
    /// `[[route]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[[witness]]`, in file order (DESIGN §12).
    pub witnesses: Vec<WitnessEntry>,
    /// `[[user]]`: people with personal client certificates (DESIGN §11).
    pub users: Vec<UserConfig>,
    /// `[console]`: the browser console's signing key (DESIGN §11).
    pub console: Option<ConsoleConfig>,
}

/// `[[user]]`: a person who signs in with a personal client certificate
/// (as SITHS eID cards work). The certificate authenticates as
/// (party, roles, user) and needs no JWT (DESIGN §1, §11).
#[derive(Debug, Clone)]
pub struct UserConfig {
    /// User id (`actor_user` in audit records, `recorded_by` of consents).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The party the user works for.
    pub party: PartyId,
    /// The user's roles, a subset of the party's.
    pub roles: BTreeSet<Role>,
    /// Pinned SPKI SHA-256 of the user's certificate.
    pub certificate_sha256: [u8; 32],
}

/// The built-in consent issuer id of the console (DESIGN §11).
pub const CONSOLE_ISSUER_ID: &str = "console";

/// `[console]`.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Ed25519 PKCS#8 PEM that signs consents recorded in the console, as
    /// the `[[consent_issuer]]` with id `console`.
    pub signing_key: PathBuf,
    /// The `kid` of that issuer entry.
    pub key_id: String,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// mTLS listen address.
    pub listen: SocketAddr,
    /// Names the log in checkpoints: `samgate/<deployment_id>`.
    pub deployment_id: String,
    /// Server certificate chain (PEM).
    pub certificate: PathBuf,
    /// Server private key (PEM).
    pub private_key: PathBuf,
    /// CA that client certificates must chain to.
    pub client_ca: PathBuf,
    /// CA that recipient endpoints' server certificates must chain to.
    pub outbound_ca: PathBuf,
    /// Gateway's client certificate towards recipients.
    pub outbound_certificate: PathBuf,
    /// Key of the outbound client certificate.
    pub outbound_private_key: PathBuf,
    /// Optional plain-HTTP listener for health and metrics only.
    pub metrics_listen: Option<SocketAddr>,
    /// Requests per second per party (burst 2x), 0 = off.
    pub rate_limit_per_party: u32,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Request body limit (default 1 MiB).
    pub max_body_bytes: usize,
    /// A connection without a complete request head by then is closed
    /// (DESIGN §10, default 10 s).
    pub header_timeout: Duration,
    /// A request body must arrive whole within this (default 30 s).
    pub body_timeout: Duration,
    /// A kept-alive connection without a request for this long is closed
    /// (default 60 s).
    pub idle_timeout: Duration,
    /// The TLS handshake must finish within this (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Most connections served at once; beyond, new ones wait in the
    /// listen backlog (default 4096).
    pub max_connections: usize,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `sqlite://...` (relative paths resolved against the config file) or `postgres://...`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before answering 503.
    pub acquire_timeout: Duration,
}

/// Where a 32-byte secret comes from: a file of 32 raw bytes (mode 0600),
/// or, written `"env:NAME"` in the config, an environment variable holding
/// 64 hex characters (for deployments that inject secrets that way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A key file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// `[keys]`: absolute paths of the key files.
#[derive(Debug, Clone)]
pub struct KeyPaths {
    /// 32 raw bytes: the pseudonym master key.
    pub pseudonym_master: SecretSource,
    /// 32 raw bytes: AES-256-GCM vault key (the first of the list: it seals).
    pub vault: SecretSource,
    /// Earlier vault keys (the rest of the list): they only open.
    pub vault_previous: Vec<SecretSource>,
    /// Ed25519 PKCS#8 PEM: signs tree heads.
    pub audit_signing: PathBuf,
    /// Ed25519 PKCS#8 PEM: signs `Samgate-Signature`.
    pub delivery_signing: PathBuf,
}

/// `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// A new tree head is signed at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// Most records written in one group-commit transaction.
    pub max_batch: usize,
    /// Cosignatures a tree head needs (DESIGN §12); default: a majority of the witnesses.
    pub witness_quorum: usize,
    /// How long a tree-head request waits for the quorum of a fresh head (default 3 s).
    pub witness_wait: Duration,
}

/// `[delivery]`.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Whole-request timeout towards a recipient.
    pub timeout: Duration,
    /// Connect timeout towards a recipient.
    pub connect_timeout: Duration,
    /// Async exchanges not delivered by then are `expired`.
    pub expire_after: Duration,
    /// First retry delay (full jitter).
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Concurrent async deliveries per instance.
    pub workers: usize,
    /// Concurrent async deliveries to one recipient endpoint, so that a slow
    /// recipient holds at most this many workers (default 4).
    pub per_recipient: usize,
}

/// `[consent]`.
#[derive(Debug, Clone)]
pub struct ConsentConfig {
    /// Longest accepted consent lifetime (`exp - nbf`).
    pub max_lifetime: Duration,
    /// How long a consent lasts after a delivered closure (DESIGN §13),
    /// in calendar months; default 12.
    pub follow_up_months: u32,
}

/// `[[consent_issuer]]`.
#[derive(Debug, Clone)]
pub struct ConsentIssuerConfig {
    /// The token's `iss`.
    pub id: String,
    /// The token header's `kid`.
    pub key_id: String,
    /// SPKI PEM public key (Ed25519 or P-256).
    pub public_key: PathBuf,
}

/// `[[party]]`.
#[derive(Debug, Clone)]
pub struct PartyConfig {
    /// Party id.
    pub id: PartyId,
    /// Display name.
    pub name: String,
    /// Organisation kind.
    pub kind: PartyKind,
    /// Roles.
    pub roles: BTreeSet<Role>,
    /// Pinned SPKI SHA-256 (lowercase hex, 32 bytes).
    pub certificate_sha256: [u8; 32],
    /// HTTPS endpoint for deliveries to this party.
    pub endpoint: Option<String>,
    /// Pinned SPKI SHA-256 of the endpoint's server certificate (DESIGN §10).
    pub endpoint_certificate_sha256: Option<[u8; 32]>,
    /// Issuer of this party's user tokens; when set, every request needs one.
    pub jwt_issuer: Option<JwtIssuerConfig>,
}

/// A party's user-token issuer (DESIGN §1, §9).
#[derive(Debug, Clone)]
pub struct JwtIssuerConfig {
    /// Expected `iss`.
    pub iss: String,
    /// Expected `aud`.
    pub audience: String,
    /// SPKI PEM public key.
    pub public_key: PathBuf,
    /// Expected header `kid`; defaults to the key's fingerprint id.
    pub key_id: Option<String>,
}

/// One problem in a config file: the key and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key, e.g. `party[2].endpoint` or `route[0].to`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O cause.
        source: std::io::Error,
    },
    /// The TOML did not parse or has an unknown/mistyped key.
    #[error("config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// The file parsed but is not consistent.
    #[error("config file {path} is invalid:\n{}", issues.iter().map(|i| format!("  {}: {}", i.key, i.reason)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// File path.
        path: PathBuf,
        /// Every problem found.
        issues: Vec<ConfigIssue>,
    },
}

/// The message types the gateway knows (one schema each, DESIGN §4).
pub fn known_types() -> &'static [&'static str] {
    &crate::schema::KNOWN_TYPES
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Self::from_toml_str(&text, &base, path)
    }

    /// Parses and validates config text whose relative paths are resolved
    /// against `base_dir`; `origin` only names the file in errors.
    pub fn from_toml_str(
        text: &str,
        base_dir: &Path,
        origin: &Path,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut v = Validator {
            base: base_dir.to_path_buf(),
            issues: Vec::new(),
        };
        let config = v.validate(raw);
        if v.issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_path_buf(),
                issues: v.issues,
            })
        }
    }

    /// Looks a party up by id.
    pub fn party(&self, id: &str) -> Option<&PartyConfig> {
        self.parties.iter().find(|p| p.id.as_str() == id)
    }

    /// Looks a user up by id.
    pub fn user(&self, id: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.id == id)
    }

    /// Every purpose some route names (DESIGN §9: the known purposes).
    pub fn known_purposes(&self) -> BTreeSet<String> {
        self.routes
            .iter()
            .flat_map(|r| r.purposes.iter().cloned())
            .collect()
    }
}

struct Validator {
    base: PathBuf,
    issues: Vec<ConfigIssue>,
}

impl Validator {
    fn issue(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// An SPKI SHA-256 pin written as 64 hex characters; an issue at `key`
    /// (naming `what` was hashed) when it is not.
    fn spki_pin(&mut self, key: String, hex: &str, what: &str) -> Option<[u8; 32]> {
        let pin = hex::decode(hex.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok());
        if pin.is_none() {
            self.issue(
                key,
                format!("must be 64 hex characters (SHA-256 of the {what}'s SubjectPublicKeyInfo)"),
            );
        }
        pin
    }

    /// Resolves a path against the config directory and checks the file exists.
    fn file(&mut self, key: &str, p: &Path) -> PathBuf {
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        };
        if !full.is_file() {
            self.issue(key, format!("file {} does not exist", full.display()));
        }
        full
    }

    /// A secret: `env:NAME` (the variable must be set) or a file.
    fn secret(&mut self, key: &str, p: &Path) -> SecretSource {
        match p.to_str().and_then(|s| s.strip_prefix("env:")) {
            Some(var) => {
                if std::env::var_os(var).is_none() {
                    self.issue(key, format!("environment variable {var} is not set"));
                }
                SecretSource::Env(var.to_owned())
            }
            None => SecretSource::File(self.file(key, p)),
        }
    }

    /// Long: one flat pass over the raw config in the section order of DESIGN
    /// §8.1, each default and check next to its key; splitting would scatter
    /// them.
    fn validate(&mut self, raw: RawConfig) -> Config {
        let server = self.server(raw.server);
        let storage = self.storage(raw.storage);
        let vault_list = match raw.keys.vault {
            RawVaultKeys::One(p) => vec![p],
            RawVaultKeys::Many(v) => v,
        };
        if vault_list.is_empty() {
            self.issue("keys.vault", "must name at least one key");
        }
        let mut vault_keys: Vec<SecretSource> = vault_list
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let key = if i == 0 {
                    "keys.vault".to_owned()
                } else {
                    format!("keys.vault[{i}]")
                };
                self.secret(&key, p)
            })
            .collect();
        let vault_first = if vault_keys.is_empty() {
            SecretSource::File(PathBuf::new())
        } else {
            vault_keys.remove(0)
        };
        let keys = KeyPaths {
            pseudonym_master: self.secret("keys.pseudonym_master", &raw.keys.pseudonym_master),
            vault: vault_first,
            vault_previous: vault_keys,
            audit_signing: self.file("keys.audit_signing", &raw.keys.audit_signing),
            delivery_signing: self.file("keys.delivery_signing", &raw.keys.delivery_signing),
        };
        let audit = AuditConfig {
            checkpoint_interval: raw
                .audit
                .checkpoint_interval
                .map_or(Duration::from_secs(1), |d| d.0),
            max_batch: raw.audit.max_batch.unwrap_or(512).max(1),
            witness_quorum: raw
                .audit
                .witness_quorum
                .unwrap_or(raw.witness.len() / 2 + usize::from(!raw.witness.is_empty())),
            witness_wait: raw
                .audit
                .witness_wait
                .map_or(Duration::from_secs(3), |d| d.0),
        };
        if audit.witness_quorum > raw.witness.len() {
            self.issue(
                "audit.witness_quorum",
                format!(
                    "is {} but only {} [[witness]] are configured",
                    audit.witness_quorum,
                    raw.witness.len()
                ),
            );
        }
        let witnesses = self.witnesses(raw.witness);
        let mut delivery = DeliveryConfig {
            timeout: raw
                .delivery
                .timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            connect_timeout: raw
                .delivery
                .connect_timeout
                .map_or(Duration::from_secs(5), |d| d.0),
            expire_after: raw
                .delivery
                .expire_after
                .map_or(Duration::from_secs(24 * 3600), |d| d.0),
            backoff_initial: raw
                .delivery
                .backoff_initial
                .map_or(Duration::from_secs(1), |d| d.0),
            backoff_max: raw
                .delivery
                .backoff_max
                .map_or(Duration::from_secs(300), |d| d.0),
            workers: raw.delivery.workers.unwrap_or(16).max(1),
            per_recipient: raw.delivery.per_recipient.unwrap_or(4).max(1),
        };
        if delivery.connect_timeout >= delivery.timeout {
            // The connection must time out before the attempt does: a total
            // timeout reached while still connecting would count as "may
            // have arrived" (revocation notices, DESIGN §13).
            delivery.connect_timeout = delivery.timeout / 2;
        }
        let days = raw.consent.max_lifetime_days.unwrap_or(730);
        if days == 0 {
            self.issue("consent.max_lifetime_days", "must be at least 1");
        }
        let follow_up_months = raw.consent.follow_up_months.unwrap_or(12);
        if !(1..=120).contains(&follow_up_months) {
            self.issue("consent.follow_up_months", "must be between 1 and 120");
        }
        let consent = ConsentConfig {
            max_lifetime: Duration::from_secs(u64::from(days) * 86_400),
            follow_up_months,
        };

        let mut consent_issuers = Vec::new();
        let mut seen_issuers = HashMap::new();
        for (i, ci) in raw.consent_issuer.into_iter().enumerate() {
            let key = format!("consent_issuer[{i}]");
            if seen_issuers
                .insert((ci.id.clone(), ci.key_id.clone()), i)
                .is_some()
            {
                self.issue(
                    format!("{key}.key_id"),
                    "the same (id, key_id) is configured twice",
                );
            }
            let public_key = self.file(&format!("{key}.public_key"), &ci.public_key);
            consent_issuers.push(ConsentIssuerConfig {
                id: ci.id,
                key_id: ci.key_id,
                public_key,
            });
        }

        let parties = self.parties(raw.party);
        let routes = self.routes(raw.route, &parties);
        let users = self.users(raw.user, &parties);
        let console = raw.console.map(|c| {
            let signing_key = self.file("console.signing_key", &c.signing_key);
            let key_id = consent_issuers
                .iter()
                .find(|i| i.id == CONSOLE_ISSUER_ID)
                .map(|i| i.key_id.clone());
            if key_id.is_none() {
                self.issue(
                    "console.signing_key",
                    "needs a [[consent_issuer]] with id \"console\" holding its public key",
                );
            }
            ConsoleConfig {
                signing_key,
                key_id: key_id.unwrap_or_default(),
            }
        });
        Config {
            base_dir: self.base.clone(),
            server,
            storage,
            keys,
            audit,
            delivery,
            consent,
            consent_issuers,
            parties,
            routes,
            witnesses,
            users,
            console,
        }
    }

    fn users(&mut self, raw: Vec<RawUser>, parties: &[PartyConfig]) -> Vec<UserConfig> {
        let mut out: Vec<UserConfig> = Vec::new();
        for (i, u) in raw.into_iter().enumerate() {
            let key = format!("user[{i}]");
            if u.id.is_empty()
                || u.id.len() > 64
                || !u.id.starts_with(|c: char| c.is_ascii_lowercase())
                || !u
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            {
                self.issue(
                    format!("{key}.id"),
                    "must start with a lowercase letter and use only lowercase letters, digits, '-', '_' and '.' (at most 64)",
                );
            }
            if out.iter().any(|o| o.id == u.id) {
                self.issue(
                    format!("{key}.id"),
                    format!("user `{}` is defined twice", u.id),
                );
            }
            if u.name.trim().is_empty() {
                self.issue(format!("{key}.name"), "must not be empty");
            }
            let roles: BTreeSet<Role> = u.roles.into_iter().collect();
            if roles.is_empty() {
                self.issue(format!("{key}.roles"), "a user needs at least one role");
            }
            match parties.iter().find(|p| p.id.as_str() == u.party) {
                None => self.issue(
                    format!("{key}.party"),
                    format!("unknown party `{}`", u.party),
                ),
                Some(p) => {
                    for r in roles.difference(&p.roles) {
                        self.issue(
                            format!("{key}.roles"),
                            format!(
                                "role `{}` is not one of party `{}`'s roles",
                                r.as_str(),
                                p.id
                            ),
                        );
                    }
                }
            }
            let pin = self
                .spki_pin(
                    format!("{key}.certificate_sha256"),
                    &u.certificate_sha256,
                    "certificate",
                )
                .unwrap_or_default();
            if let Some(p) = parties.iter().find(|p| p.certificate_sha256 == pin) {
                self.issue(
                    format!("{key}.certificate_sha256"),
                    format!("the same certificate is already pinned to party `{}`; a certificate must map to exactly one party or user", p.id),
                );
            }
            if let Some(o) = out.iter().find(|o| o.certificate_sha256 == pin) {
                self.issue(
                    format!("{key}.certificate_sha256"),
                    format!("the same certificate is already pinned to user `{}`", o.id),
                );
            }
            out.push(UserConfig {
                id: u.id,
                name: u.name,
                party: PartyId::new(u.party),
                roles,
                certificate_sha256: pin,
            });
        }
        out
    }

    fn witnesses(&mut self, raw: Vec<RawWitness>) -> Vec<WitnessEntry> {
        let mut out: Vec<WitnessEntry> = Vec::new();
        for (i, w) in raw.into_iter().enumerate() {
            let key = format!("witness[{i}]");
            if !crate::audit::cosign::is_valid_name(&w.name) {
                self.issue(
                    format!("{key}.name"),
                    "must be non-empty without spaces or '+'",
                );
            }
            if out.iter().any(|o| o.name == w.name) {
                self.issue(
                    format!("{key}.name"),
                    format!("witness `{}` is defined twice", w.name),
                );
            }
            if !w.url.starts_with("https://") || reqwest::Url::parse(&w.url).is_err() {
                self.issue(format!("{key}.url"), "must be an https:// URL");
            }
            let public_key = self.file(&format!("{key}.public_key"), &w.public_key);
            let ca = w.ca.map(|c| self.file(&format!("{key}.ca"), &c));
            out.push(WitnessEntry {
                name: w.name,
                url: w.url,
                public_key,
                ca,
            });
        }
        out
    }

    fn server(&mut self, s: RawServer) -> ServerConfig {
        let deployment_id = s.deployment_id.unwrap_or_else(|| "default".to_owned());
        if deployment_id.is_empty()
            || !deployment_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            self.issue(
                "server.deployment_id",
                "must be non-empty and use only letters, digits, '-', '_' and '.'",
            );
        }
        ServerConfig {
            listen: s.listen,
            deployment_id,
            certificate: self.file("server.certificate", &s.certificate),
            private_key: self.file("server.private_key", &s.private_key),
            client_ca: self.file("server.client_ca", &s.client_ca),
            outbound_ca: self.file("server.outbound_ca", &s.outbound_ca),
            outbound_certificate: self.file("server.outbound_certificate", &s.outbound_certificate),
            outbound_private_key: self.file("server.outbound_private_key", &s.outbound_private_key),
            metrics_listen: s.metrics_listen,
            rate_limit_per_party: s.rate_limit_per_party.unwrap_or(0),
            shutdown_grace: s.shutdown_grace.map_or(Duration::from_secs(10), |d| d.0),
            max_body_bytes: s.max_body_bytes.unwrap_or(1024 * 1024),
            header_timeout: self.positive("server.header_timeout", s.header_timeout, 10),
            body_timeout: self.positive("server.body_timeout", s.body_timeout, 30),
            idle_timeout: self.positive("server.idle_timeout", s.idle_timeout, 60),
            tls_handshake_timeout: self.positive(
                "server.tls_handshake_timeout",
                s.tls_handshake_timeout,
                10,
            ),
            max_connections: match s.max_connections {
                Some(0) => {
                    self.issue("server.max_connections", "must be at least 1");
                    1
                }
                Some(n) => n,
                None => 4096,
            },
        }
    }

    /// A duration that must not be zero, with its default in seconds.
    fn positive(&mut self, key: &str, d: Option<HumanDuration>, default_secs: u64) -> Duration {
        match d {
            Some(d) if d.0.is_zero() => {
                self.issue(key, "must be longer than 0s");
                Duration::from_secs(default_secs)
            }
            Some(d) => d.0,
            None => Duration::from_secs(default_secs),
        }
    }

    fn storage(&mut self, mut s: RawStorage) -> StorageConfig {
        // `env:NAME`: the URL (which may hold a database password) comes
        // from the environment, so that the file need not carry it.
        if let Some(var) = s.url.strip_prefix("env:").map(str::to_owned) {
            match std::env::var(&var) {
                Ok(v) if !v.trim().is_empty() => s.url = v.trim().to_owned(),
                _ => {
                    self.issue(
                        "storage.url",
                        format!("environment variable {var} is not set"),
                    );
                    return StorageConfig {
                        url: String::new(),
                        max_connections: s.max_connections.unwrap_or(8).max(1),
                        acquire_timeout: s.acquire_timeout.map_or(Duration::from_secs(3), |d| d.0),
                    };
                }
            }
        }
        let url = if let Some(rest) = s.url.strip_prefix("sqlite://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let p = Path::new(path);
            let full = if p.is_absolute() || path.starts_with(':') {
                p.to_path_buf()
            } else {
                self.base.join(p)
            };
            let mut url = format!("sqlite://{}", full.display());
            if !query.is_empty() {
                url.push('?');
                url.push_str(query);
            }
            url
        } else if s.url.starts_with("sqlite:")
            || s.url.starts_with("postgres://")
            || s.url.starts_with("postgresql://")
        {
            s.url
        } else {
            self.issue("storage.url", "must start with sqlite:// or postgres://");
            s.url
        };
        StorageConfig {
            url,
            max_connections: s.max_connections.unwrap_or(8).max(1),
            acquire_timeout: s.acquire_timeout.map_or(Duration::from_secs(3), |d| d.0),
        }
    }

    /// Long: the checks of one `[[party]]` entry in the order of its keys,
    /// sharing its key prefix and the pins seen so far; splitting would scatter
    /// them.
    fn parties(&mut self, raw: Vec<RawParty>) -> Vec<PartyConfig> {
        let mut out: Vec<PartyConfig> = Vec::new();
        let mut pins: HashMap<[u8; 32], String> = HashMap::new();
        for (i, p) in raw.into_iter().enumerate() {
            let key = format!("party[{i}]");
            if p.id.is_empty()
                || !p
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                self.issue(
                    format!("{key}.id"),
                    "must be lowercase letters, digits and '-'",
                );
            }
            if matches!(p.id.as_str(), "audit" | "consent") {
                self.issue(
                    format!("{key}.id"),
                    "`audit` and `consent` are reserved pseudonym domains",
                );
            }
            if out.iter().any(|q| q.id.as_str() == p.id) {
                self.issue(
                    format!("{key}.id"),
                    format!("party `{}` is defined twice", p.id),
                );
            }
            if p.roles.is_empty() {
                self.issue(format!("{key}.roles"), "a party needs at least one role");
            }
            let pin = self
                .spki_pin(
                    format!("{key}.certificate_sha256"),
                    &p.certificate_sha256,
                    "certificate",
                )
                .unwrap_or_default();
            if let Some(other) = pins.insert(pin, p.id.clone()) {
                self.issue(
                    format!("{key}.certificate_sha256"),
                    format!("the same certificate is already pinned to party `{other}`; a certificate must map to exactly one party"),
                );
            }
            if let Some(ep) = &p.endpoint {
                if !ep.starts_with("https://") {
                    self.issue(format!("{key}.endpoint"), "must be an https:// URL");
                } else if reqwest::Url::parse(ep).is_err() {
                    self.issue(format!("{key}.endpoint"), "is not a valid URL");
                }
            }
            let endpoint_pin = p.endpoint_certificate_sha256.as_deref().and_then(|h| {
                let key = format!("{key}.endpoint_certificate_sha256");
                self.spki_pin(key, h, "endpoint certificate")
            });
            if endpoint_pin.is_some() && p.endpoint.is_none() {
                self.issue(
                    format!("{key}.endpoint_certificate_sha256"),
                    "is set but the party has no endpoint",
                );
            }
            let roles: BTreeSet<Role> = p.roles.into_iter().collect();
            let jwt_issuer = p.jwt_issuer.map(|j| JwtIssuerConfig {
                public_key: self.file(&format!("{key}.jwt_issuer.public_key"), &j.public_key),
                iss: j.iss,
                audience: j.audience,
                key_id: j.key_id,
            });
            if roles.contains(&Role::Auditor) && jwt_issuer.is_none() {
                self.issue(
                    format!("{key}.jwt_issuer"),
                    "a party with the auditor role needs a jwt_issuer (a named human user is required)",
                );
            }
            out.push(PartyConfig {
                id: PartyId::new(p.id),
                name: p.name,
                kind: p.kind,
                roles,
                certificate_sha256: pin,
                endpoint: p.endpoint,
                endpoint_certificate_sha256: endpoint_pin,
                jwt_issuer,
            });
        }
        out
    }

    fn routes(&mut self, raw: Vec<RawRoute>, parties: &[PartyConfig]) -> Vec<RouteConfig> {
        let registry = crate::schema::SchemaRegistry::builtin().ok();
        let mut out = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("route[{i}]");
            let check_parties = |v: &mut Self, list: &[String], field: &str| {
                if list.is_empty() {
                    v.issue(format!("{key}.{field}"), "must name at least one party");
                }
                for id in list {
                    if !parties.iter().any(|p| p.id.as_str() == id) {
                        v.issue(format!("{key}.{field}"), format!("unknown party `{id}`"));
                    }
                }
            };
            check_parties(self, &r.from, "from");
            check_parties(self, &r.to, "to");
            for id in &r.to {
                if let Some(p) = parties.iter().find(|p| p.id.as_str() == id) {
                    if p.endpoint.is_none() {
                        self.issue(
                            format!("{key}.to"),
                            format!("party `{id}` receives on this route but has no endpoint"),
                        );
                    }
                }
            }
            if !known_types().contains(&r.msg_type.as_str()) {
                self.issue(
                    format!("{key}.type"),
                    format!("unknown message type `{}`", r.msg_type),
                );
            } else if let Some(schema) = registry.as_ref().and_then(|reg| reg.get(&r.msg_type)) {
                if let Err(bad) = crate::policy::check_allow_list(schema, &r.fields) {
                    self.issue(
                        format!("{key}.fields"),
                        format!(
                            "`{bad}` is not a top-level field of `{}` (or `*`)",
                            r.msg_type
                        ),
                    );
                }
            }
            if r.purposes.is_empty() {
                self.issue(format!("{key}.purposes"), "must name at least one purpose");
            }
            if r.consent == ConsentRequirement::NotRequired && r.msg_type != "statistics-report" {
                self.issue(
                    format!("{key}.consent"),
                    "\"not-required\" is only allowed for statistics-report routes",
                );
            }
            if r.consent == ConsentRequirement::NotRequired && r.subject != SubjectMode::Omit {
                self.issue(
                    format!("{key}.subject"),
                    "a route without consent must omit the subject",
                );
            }
            out.push(RouteConfig {
                from: r.from.into_iter().map(PartyId::new).collect(),
                to: r.to.into_iter().map(PartyId::new).collect(),
                msg_type: r.msg_type,
                purposes: r.purposes,
                fields: r.fields,
                subject: r.subject,
                consent: r.consent,
            });
        }
        out
    }
}
