//! `samgate init`: writes a complete working set for a new deployment (test
//! CA, TLS certificates, signing and secret keys, `samgate.toml` with the demo
//! parties and routes) into a directory (DESIGN §8.1, §9).
//!
//! Everything is generated in memory first and then written with
//! `create_new`, so no existing file is ever overwritten. `samgate.toml` is
//! written last: its presence means the working set is complete, and a second
//! run into the same directory is refused before anything is touched.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::pki::{generate_ed25519, spki_sha256_hex, PkiError, SigningKeyPem, TestCa};

/// The configuration file `init` writes, relative to the directory.
pub const CONFIG_FILE: &str = "samgate.toml";
/// The demo consent issuer (the samordningsförbund's referral group).
pub const CONSENT_ISSUER_ID: &str = "sfk-kalmar-intake";
/// The key id (`kid`) of the demo consent issuer's key.
pub const CONSENT_ISSUER_KEY_ID: &str = "2026-1";
/// The route table appended to the generated configuration.
const DEMO_ROUTES: &str = include_str!("../config/demo-routes.toml");

/// A party of the demo deployment (DESIGN §1, §9; DOMAIN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoParty {
    /// Party id, also the client certificate's common name.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Party kind as written in the configuration.
    pub kind: &'static str,
    /// Roles as written in the configuration.
    pub roles: &'static [&'static str],
    /// Whether the party receives messages (has an `endpoint` and a server
    /// certificate `pki/<id>-server.pem`).
    pub has_endpoint: bool,
}

impl DemoParty {
    /// Whether the party has the `auditor` role, and so a user-token issuer
    /// (`keys/users-<id>.pem`) wired as its `jwt_issuer` (DESIGN §9).
    pub fn is_auditor(&self) -> bool {
        self.roles.contains(&"auditor")
    }

    /// The `iss` of the party's user tokens: `<id>-users`.
    pub fn users_iss(&self) -> String {
        format!("{}-users", self.id)
    }
}

/// The demo parties, in configuration order. Recipients get the ports
/// `recipient_base_port + i` in this order (i counting recipients only).
pub const DEMO_PARTIES: &[DemoParty] = &[
    DemoParty {
        id: "fk",
        name: "Försäkringskassan",
        kind: "forsakringskassan",
        roles: &["agency"],
        has_endpoint: true,
    },
    DemoParty {
        id: "af",
        name: "Arbetsförmedlingen",
        kind: "arbetsformedlingen",
        roles: &["agency"],
        has_endpoint: true,
    },
    DemoParty {
        id: "kommun-kalmar",
        name: "Kalmar kommun",
        kind: "kommun",
        roles: &["agency"],
        has_endpoint: true,
    },
    DemoParty {
        id: "region-kalmar",
        name: "Region Kalmar län",
        kind: "region",
        roles: &["agency"],
        has_endpoint: true,
    },
    DemoParty {
        id: "sfk-kalmar",
        name: "Samordningsförbundet i Kalmar län",
        kind: "samordningsforbund",
        roles: &["agency", "intake"],
        has_endpoint: true,
    },
    DemoParty {
        id: "sfk-kalmar-audit",
        name: "Samordningsförbundet i Kalmar län, revision",
        kind: "samordningsforbund",
        roles: &["auditor"],
        has_endpoint: false,
    },
];

/// A person of the demo deployment with a personal client certificate
/// (`[[user]]`, DESIGN §11): one per intake and auditor party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    /// User id; the files are `pki/users/<id>.pem`, `.key`, `.p12`.
    pub id: &'static str,
    /// Display name (also the certificate's common name).
    pub name: &'static str,
    /// The party the user works for.
    pub party: &'static str,
    /// The user's roles (a subset of the party's).
    pub roles: &'static [&'static str],
}

/// The demo users: intake staff of `sfk-kalmar`, an auditor of
/// `sfk-kalmar-audit`.
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        id: "anna.lind",
        name: "Anna Lind",
        party: "sfk-kalmar",
        roles: &["intake"],
    },
    DemoUser {
        id: "erik.berg",
        name: "Erik Berg",
        party: "sfk-kalmar-audit",
        roles: &["auditor"],
    },
];

/// The key id of the console's built-in consent issuer key.
pub const CONSOLE_ISSUER_KEY_ID: &str = "console-1";

/// Options of `samgate init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOptions {
    /// The gateway's mTLS listen address (`[server] listen`).
    pub listen: SocketAddr,
    /// Port of the first recipient endpoint; the others follow.
    pub recipient_base_port: u16,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443),
            recipient_base_port: 9101,
        }
    }
}

/// What `init` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The configuration file (`<dir>/samgate.toml`).
    pub config: PathBuf,
    /// The random `[server] deployment_id`.
    pub deployment_id: String,
    /// The parties, in configuration order.
    pub parties: Vec<PartyReport>,
    /// The console users (`[[user]]`), in configuration order.
    pub users: Vec<UserReport>,
    /// Every file written, in the order written (`samgate.toml` last).
    pub files: Vec<PathBuf>,
}

impl InitReport {
    /// The report of one party.
    pub fn party(&self, id: &str) -> Option<&PartyReport> {
        self.parties.iter().find(|p| p.id == id)
    }
}

/// One party as configured by `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyReport {
    /// Party id.
    pub id: &'static str,
    /// SPKI SHA-256 pin of its client certificate (`certificate_sha256`).
    pub certificate_sha256: String,
    /// Its inbox URL, for recipients.
    pub endpoint: Option<String>,
    /// SPKI SHA-256 pin of its endpoint's server certificate
    /// (`endpoint_certificate_sha256`), for recipients.
    pub endpoint_certificate_sha256: Option<String>,
}

/// One console user as configured by `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserReport {
    /// User id.
    pub id: &'static str,
    /// SPKI SHA-256 pin of the user's certificate.
    pub certificate_sha256: String,
}

/// Errors of `samgate init`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The directory already holds a configuration; nothing was written.
    #[error("{} already exists; refusing to overwrite it", path.display())]
    AlreadyInitialised {
        /// The existing configuration file.
        path: PathBuf,
    },
    /// A directory could not be created.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file could not be written (including: it already exists).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Generating a certificate or key failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A PKCS#12 file could not be built.
    #[error("cannot build the PKCS#12 file of user {user}: {reason}")]
    Pkcs12 {
        /// The user.
        user: &'static str,
        /// The cause.
        reason: String,
    },
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// `recipient_base_port` is too high for all recipients to get a port.
    #[error("recipient port for {party} is beyond 65535")]
    PortOutOfRange {
        /// The party without a port.
        party: &'static str,
    },
    /// A party's witness could not be prepared.
    #[error("witness of {party}: {reason}")]
    Witness {
        /// The party.
        party: &'static str,
        /// Why.
        reason: String,
    },
}

/// A file to write: path relative to the init directory, contents, and
/// whether it holds a secret (mode 0600) or not (mode 0644).
struct Planned {
    path: String,
    contents: Zeroizing<Vec<u8>>,
    private: bool,
}

impl Planned {
    fn public(path: String, contents: &str) -> Self {
        let contents = Zeroizing::new(contents.as_bytes().to_vec());
        Self {
            path,
            contents,
            private: false,
        }
    }

    fn private(path: String, contents: &[u8]) -> Self {
        let contents = Zeroizing::new(contents.to_vec());
        Self {
            path,
            contents,
            private: true,
        }
    }
}

/// Writes the working set of DESIGN §8.1 into `dir`, creating it (and its
/// parents) if missing. Refuses if `dir/samgate.toml` exists.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitReport, InitError> {
    let config = dir.join(CONFIG_FILE);
    if config.symlink_metadata().is_ok() {
        return Err(InitError::AlreadyInitialised { path: config });
    }

    let rng = SystemRandom::new();
    let deployment_id = format!("kalmar-{}", hex::encode(random_bytes::<4>(&rng)?));
    let mut files = Vec::new();
    let mut parties = Vec::new();

    let ca = TestCa::generate(&format!("samgate test CA {deployment_id}"))?;
    files.push(Planned::public("pki/ca.pem".into(), ca.cert_pem()));
    files.push(Planned::private(
        "pki/ca.key".into(),
        ca.key_pem().as_bytes(),
    ));

    let listen_ip = opts.listen.ip().to_string();
    let mut gateway_sans = vec!["localhost", "127.0.0.1"];
    // A specific non-loopback listen address is added so that agencies can
    // connect to it by IP; for 0.0.0.0/:: operators reissue with real names.
    if !opts.listen.ip().is_unspecified() && !opts.listen.ip().is_loopback() {
        gateway_sans.push(&listen_ip);
    }
    let gateway = ca.issue_server("samgate gateway", &gateway_sans)?;
    push_cert(&mut files, "pki/gateway", &gateway);
    let gateway_client = ca.issue_client("samgate gateway")?;
    push_cert(&mut files, "pki/gateway-client", &gateway_client);

    let mut port = Some(opts.recipient_base_port);
    for party in DEMO_PARTIES {
        let client = ca.issue_client(party.id)?;
        push_cert(&mut files, &format!("pki/{}", party.id), &client);
        let (endpoint, endpoint_pin) = if party.has_endpoint {
            let p = port.ok_or(InitError::PortOutOfRange { party: party.id })?;
            port = p.checked_add(1);
            let server =
                ca.issue_server(&format!("{} inbox", party.id), &["localhost", "127.0.0.1"])?;
            push_cert(&mut files, &format!("pki/{}-server", party.id), &server);
            (
                Some(format!("https://127.0.0.1:{p}/inbox")),
                Some(spki_sha256_hex(server.cert_der())?),
            )
        } else {
            (None, None)
        };
        parties.push(PartyReport {
            id: party.id,
            certificate_sha256: spki_sha256_hex(client.cert_der())?,
            endpoint,
            endpoint_certificate_sha256: endpoint_pin,
        });
    }

    let mut users = Vec::new();
    for user in DEMO_USERS {
        let cert = ca.issue_client(user.name)?;
        push_cert(&mut files, &format!("pki/users/{}", user.id), &cert);
        let p12 = pkcs12(user, &cert, ca.cert_der())?;
        files.push(Planned::private(format!("pki/users/{}.p12", user.id), &p12));
        users.push(UserReport {
            id: user.id,
            certificate_sha256: spki_sha256_hex(cert.cert_der())?,
        });
    }

    push_signing_key(&mut files, &format!("keys/issuer-{CONSENT_ISSUER_ID}"))?;
    push_signing_key(&mut files, "keys/issuer-console")?;
    push_signing_key(&mut files, "keys/audit")?;
    push_signing_key(&mut files, "keys/delivery")?;
    files.push(Planned::private(
        "keys/pseudonym.key".into(),
        &random_bytes::<32>(&rng)?[..],
    ));
    files.push(Planned::private(
        "keys/vault.key".into(),
        &random_bytes::<32>(&rng)?[..],
    ));
    for party in DEMO_PARTIES.iter().filter(|p| p.is_auditor()) {
        push_signing_key(&mut files, &format!("keys/users-{}", party.id))?;
    }

    // One witness per agency (DESIGN §12), on recipient_base_port + 100 + i.
    let gateway_client_pin = spki_sha256_hex(gateway_client.cert_der())?;
    let mut witness_port = opts.recipient_base_port.checked_add(100);
    let mut witnesses = Vec::new();
    for party in DEMO_PARTIES.iter().filter(|p| is_witness_party(p)) {
        let p = witness_port.ok_or(InitError::PortOutOfRange { party: party.id })?;
        witness_port = p.checked_add(1);
        let wopts = crate::witness::init::WitnessInit {
            name: witness_name(party.id),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p),
            logs: vec![(
                format!("samgate/{deployment_id}"),
                "../../keys/audit.pub.pem".into(),
            )],
            client_ca: "../../pki/ca.pem".into(),
            client_pins: vec![gateway_client_pin.clone()],
        };
        let (planned, _) =
            crate::witness::init::plan(&wopts, Some(&ca)).map_err(|e| InitError::Witness {
                party: party.id,
                reason: e,
            })?;
        for f in planned {
            files.push(Planned {
                path: format!("witnesses/{}/{}", party.id, f.path),
                contents: f.contents,
                private: f.private,
            });
        }
        witnesses.push((party.id, p));
    }

    let mut toml = render_config(opts, &deployment_id, &parties);
    render_console(&mut toml, &users);
    toml.push_str(&render_witnesses(&witnesses));
    // 0600: the file names every key path and may carry a database URL
    // with a password (issue #19).
    files.push(Planned::private(CONFIG_FILE.into(), toml.as_bytes()));

    create_dir(dir, None)?;
    create_dir(&dir.join("pki"), Some(0o700))?;
    create_dir(&dir.join("pki/users"), Some(0o700))?;
    create_dir(&dir.join("keys"), Some(0o700))?;
    create_dir(&dir.join("data"), None)?;
    for (party, _) in &witnesses {
        create_dir(&dir.join(format!("witnesses/{party}/tls")), Some(0o700))?;
    }
    let mut written = Vec::with_capacity(files.len());
    for file in &files {
        let path = dir.join(&file.path);
        write_file(&path, &file.contents, file.private)?;
        written.push(path);
    }

    Ok(InitReport {
        config,
        deployment_id,
        parties,
        users,
        files: written,
    })
}

/// Whether `init` writes a witness for this party: the agencies (fk, af, the municipality
/// and the region), not the samordningsförbund that runs the intake.
pub fn is_witness_party(party: &DemoParty) -> bool {
    party.roles.contains(&"agency") && party.kind != "samordningsforbund"
}

/// The name of a party's witness (the key name of its cosignatures).
pub fn witness_name(party: &str) -> String {
    format!("{party}-witness")
}

/// The `[[witness]]` entries of `samgate.toml`.
fn render_witnesses(witnesses: &[(&str, u16)]) -> String {
    let mut out = String::from(
        "\n# The agencies' witnesses (DESIGN §12, docs/audit.md): each cosigns every new\n\
         # checkpoint after checking that it extends the last one it saw. Each lives in\n\
         # witnesses/<party>/ (start it with `samgate witness serve --config\n\
         # witnesses/<party>/witness.toml`); a real agency runs its own.\n",
    );
    for (party, port) in witnesses {
        let _ = write!(
            out,
            "\n[[witness]]\nname = {}\nurl = {}\npublic_key = {}\n",
            toml_string(&witness_name(party)),
            toml_string(&format!("https://127.0.0.1:{port}")),
            toml_string(&format!("witnesses/{party}/witness.vkey")),
        );
    }
    out
}

/// A user's certificate, key and the CA certificate as PKCS#12 with an
/// empty password (PBES2/AES-256, HMAC-SHA-256), for import into a browser.
fn pkcs12(
    user: &DemoUser,
    cert: &crate::pki::IssuedCert,
    ca_der: &[u8],
) -> Result<Vec<u8>, InitError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let err = |reason: String| InitError::Pkcs12 {
        user: user.id,
        reason,
    };
    let key_der = pem::parse(cert.key_pem()).map_err(|e| err(e.to_string()))?;
    let key = PrivateKey::from_der(key_der.contents()).map_err(|e| err(e.to_string()))?;
    let leaf = Certificate::from_der(cert.cert_der()).map_err(|e| err(e.to_string()))?;
    let ca = Certificate::from_der(ca_der).map_err(|e| err(e.to_string()))?;
    let key_id = ring::digest::digest(&ring::digest::SHA256, cert.cert_der());
    let chain = PrivateKeyChain::new(key_id.as_ref(), key, [leaf, ca]);
    let mut store = KeyStore::new();
    store.add_entry(user.id, KeyStoreEntry::PrivateKeyChain(chain));
    store.writer("").write().map_err(|e| err(e.to_string()))
}

/// Appends the console's part of `samgate.toml`: the built-in `console`
/// consent issuer, its signing key and the `[[user]]` entries (DESIGN §11).
fn render_console(out: &mut String, users: &[UserReport]) {
    let _ = write!(
        out,
        r#"
# The browser console (https://<listen>/console/, DESIGN §11). Consents
# recorded there are signed by the gateway as the built-in issuer "console".
[[consent_issuer]]
id = "console"
key_id = {kid}
public_key = "keys/issuer-console.pub.pem"

[console]
signing_key = "keys/issuer-console.pem"

# People who sign in with a personal client certificate (pki/users/<id>.p12,
# empty password). roles must be a subset of the party's roles.
"#,
        kid = toml_string(CONSOLE_ISSUER_KEY_ID),
    );
    for report in users {
        let Some(user) = DEMO_USERS.iter().find(|u| u.id == report.id) else {
            continue;
        };
        let roles = toml_list(user.roles);
        let _ = write!(
            out,
            "\n[[user]]\nid = {}\nname = {}\nparty = {}\nroles = [{roles}]\ncertificate_sha256 = {}\n",
            toml_string(user.id),
            toml_string(user.name),
            toml_string(user.party),
            toml_string(&report.certificate_sha256),
        );
    }
}

fn push_cert(files: &mut Vec<Planned>, stem: &str, cert: &crate::pki::IssuedCert) {
    files.push(Planned::public(format!("{stem}.pem"), cert.cert_pem()));
    files.push(Planned::private(
        format!("{stem}.key"),
        cert.key_pem().as_bytes(),
    ));
}

fn push_signing_key(files: &mut Vec<Planned>, stem: &str) -> Result<(), InitError> {
    let SigningKeyPem {
        pkcs8_pem,
        spki_pem,
    } = generate_ed25519()?;
    files.push(Planned::private(
        format!("{stem}.pem"),
        pkcs8_pem.as_bytes(),
    ));
    files.push(Planned::public(format!("{stem}.pub.pem"), &spki_pem));
    Ok(())
}

fn random_bytes<const N: usize>(rng: &SystemRandom) -> Result<Zeroizing<[u8; N]>, InitError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    rng.fill(&mut bytes[..]).map_err(|_| InitError::Random)?;
    Ok(bytes)
}

fn create_dir(path: &Path, mode: Option<u32>) -> Result<(), InitError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(path).map_err(|source| InitError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` (never overwriting) with mode 0600 for secrets, else 0644.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), InitError> {
    let err = |source| InitError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        let file = options.open(path).map_err(err)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)?;
        write_all(file, contents).map_err(err)
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        write_all(options.open(path).map_err(err)?, contents).map_err(err)
    }
}

fn write_all(mut file: fs::File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

/// Renders `samgate.toml` as an operator would write it: commented, in the
/// section order of DESIGN §8.1, with the demo route table appended.
fn render_config(opts: &InitOptions, deployment_id: &str, parties: &[PartyReport]) -> String {
    let listen = toml_string(&opts.listen.to_string());
    let deployment_id = toml_string(deployment_id);
    let issuer_id = toml_string(CONSENT_ISSUER_ID);
    let issuer_kid = toml_string(CONSENT_ISSUER_KEY_ID);
    let issuer_key = toml_string(&format!("keys/issuer-{CONSENT_ISSUER_ID}.pub.pem"));
    let mut out = format!(
        r#"# samgate configuration, written by `samgate init` (DESIGN §8.1).
# Paths are relative to this file. Unknown keys are refused at start.
# The private keys next to it (pki/*.key, keys/*.key and the keys/*.pem that
# are not *.pub.pem) have mode 0600; samgate refuses keys readable by others.

# The mTLS listener. Agencies connect with a client certificate that chains
# to `client_ca` and whose SPKI SHA-256 is pinned to one [[party]] below.
# Towards recipient endpoints the gateway presents `outbound_certificate` and
# trusts servers that chain to `outbound_ca`.
[server]
listen = {listen}
# Names this deployment in signed audit checkpoints ("samgate/<id>").
deployment_id = {deployment_id}
certificate = "pki/gateway.pem"
private_key = "pki/gateway.key"
client_ca = "pki/ca.pem"
outbound_ca = "pki/ca.pem"
outbound_certificate = "pki/gateway-client.pem"
outbound_private_key = "pki/gateway-client.key"
# Requests per second per party (burst twice that); 0 turns the limit off.
rate_limit_per_party = 2000
# How long in-flight requests may finish after SIGINT/SIGTERM.
shutdown_grace = "10s"
# Slow and many clients (DESIGN §10): a connection without a complete request
# head after header_timeout is closed, a body must arrive within body_timeout,
# a kept-alive connection without a request is closed after idle_timeout, a
# TLS handshake must finish within tls_handshake_timeout, and at most
# max_connections are served at once (more wait in the listen backlog).
header_timeout = "10s"
body_timeout = "30s"
idle_timeout = "60s"
tls_handshake_timeout = "10s"
max_connections = 4096
# A plain-HTTP listener with only /healthz, /readyz and /metrics:
# metrics_listen = "127.0.0.1:9464"

# Where consents, exchanges and the audit log live: sqlite://... or postgres://...
[storage]
url = "sqlite://data/samgate.db"
max_connections = 8

# Key files (never the keys themselves). pseudonym_master and vault hold 32
# random bytes each; audit_signing signs tree heads and delivery_signing the
# Samgate-Signature header (Ed25519, PKCS#8 PEM).
[keys]
pseudonym_master = "keys/pseudonym.key"
vault = "keys/vault.key"
audit_signing = "keys/audit.pem"
delivery_signing = "keys/delivery.pem"

# How often a signed tree head (checkpoint) is published, and how many of the
# [[witness]] below must cosign it (DESIGN §12).
[audit]
checkpoint_interval = "1s"
witness_quorum = 3

# Delivery to recipient endpoints: per-attempt timeout, when a queued exchange
# expires, and the exponential backoff (with full jitter) between attempts.
[delivery]
timeout = "10s"
expire_after = "24h"
backoff_initial = "1s"
backoff_max = "5m"
# Concurrent async deliveries, and at most per_recipient of them to one
# endpoint, so a slow recipient delays only its own messages.
workers = 16
per_recipient = 4

# Consents may be valid for at most this long. After a delivered `closure`
# a consent covers only follow-up (`uppfoljning`) and ends this many
# calendar months after the closure (DESIGN §13).
[consent]
max_lifetime_days = 730
follow_up_months = 12

# Intake systems whose signed consents (compact JWS) are accepted: `id` is the
# token's `iss`, `key_id` its `kid`. Add a second entry with a new key_id to
# rotate keys.
[[consent_issuer]]
id = {issuer_id}
key_id = {issuer_kid}
public_key = {issuer_key}

# The parties. certificate_sha256 pins the party's client certificate (hex
# SHA-256 of its SubjectPublicKeyInfo); a recipient's endpoint is where the
# gateway delivers its messages, and endpoint_certificate_sha256 pins that
# endpoint's server certificate the same way (another certificate, even one
# from outbound_ca, is a failed delivery and nothing is sent). A party with jwt_issuer must also send a user
# JWT (Authorization: Bearer) signed by that issuer on every request.
"#
    );
    for report in parties {
        let Some(party) = DEMO_PARTIES.iter().find(|p| p.id == report.id) else {
            continue;
        };
        let roles = toml_list(party.roles);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "\n[[party]]\nid = {}\nname = {}\nkind = {}\nroles = [{roles}]\ncertificate_sha256 = {}\n",
            toml_string(party.id),
            toml_string(party.name),
            toml_string(party.kind),
            toml_string(&report.certificate_sha256),
        );
        if let Some(endpoint) = &report.endpoint {
            let _ = writeln!(out, "endpoint = {}", toml_string(endpoint));
        }
        if let Some(pin) = &report.endpoint_certificate_sha256 {
            let _ = writeln!(out, "endpoint_certificate_sha256 = {}", toml_string(pin));
        }
        if party.is_auditor() {
            let _ = writeln!(
                out,
                "jwt_issuer = {{ iss = {}, audience = \"samgate\", public_key = {} }}",
                toml_string(&party.users_iss()),
                toml_string(&format!("keys/users-{}.pub.pem", party.id)),
            );
        }
    }
    out.push('\n');
    out.push_str(DEMO_ROUTES);
    out
}

/// A TOML basic string with the characters TOML requires escaped.
/// The items of a TOML array of strings, without the brackets.
fn toml_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|r| toml_string(r))
        .collect::<Vec<_>>()
        .join(", ")
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    /// The files of the DESIGN §8.1 table for the demo parties, and whether
    /// each is private.
    fn expected_files() -> Vec<(String, bool)> {
        let mut files = vec![
            ("samgate.toml".to_owned(), true),
            ("pki/ca.pem".to_owned(), false),
            ("pki/ca.key".to_owned(), true),
            ("pki/gateway.pem".to_owned(), false),
            ("pki/gateway.key".to_owned(), true),
            ("pki/gateway-client.pem".to_owned(), false),
            ("pki/gateway-client.key".to_owned(), true),
            ("keys/issuer-sfk-kalmar-intake.pem".to_owned(), true),
            ("keys/issuer-sfk-kalmar-intake.pub.pem".to_owned(), false),
            ("keys/audit.pem".to_owned(), true),
            ("keys/audit.pub.pem".to_owned(), false),
            ("keys/delivery.pem".to_owned(), true),
            ("keys/delivery.pub.pem".to_owned(), false),
            ("keys/pseudonym.key".to_owned(), true),
            ("keys/vault.key".to_owned(), true),
            ("keys/users-sfk-kalmar-audit.pem".to_owned(), true),
            ("keys/users-sfk-kalmar-audit.pub.pem".to_owned(), false),
            ("keys/issuer-console.pem".to_owned(), true),
            ("keys/issuer-console.pub.pem".to_owned(), false),
        ];
        for party in DEMO_PARTIES.iter().filter(|p| is_witness_party(p)) {
            for (f, private) in [
                ("witness.toml", false),
                ("witness.pem", true),
                ("witness.pub.pem", false),
                ("witness.vkey", false),
                ("tls/server.pem", false),
                ("tls/server.key", true),
            ] {
                files.push((format!("witnesses/{}/{f}", party.id), private));
            }
        }
        for user in DEMO_USERS {
            files.push((format!("pki/users/{}.pem", user.id), false));
            files.push((format!("pki/users/{}.key", user.id), true));
            files.push((format!("pki/users/{}.p12", user.id), true));
        }
        for party in DEMO_PARTIES {
            files.push((format!("pki/{}.pem", party.id), false));
            files.push((format!("pki/{}.key", party.id), true));
            if party.has_endpoint {
                files.push((format!("pki/{}-server.pem", party.id), false));
                files.push((format!("pki/{}-server.key", party.id), true));
            }
        }
        files.sort();
        files
    }

    /// Every regular file under `dir`, relative, with its contents and mode.
    fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                    let mode = meta.permissions().mode() & 0o777;
                    out.insert(rel, (fs::read(&path).unwrap(), mode));
                }
            }
        }
        out
    }

    fn config(dir: &Path) -> toml::Table {
        fs::read_to_string(dir.join(CONFIG_FILE))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn init_writes_exactly_the_files_of_the_table() {
        let tmp = tempfile::tempdir().unwrap();
        let report = init(tmp.path(), &InitOptions::default()).unwrap();
        let written: Vec<_> = snapshot(tmp.path()).into_keys().collect();
        let expected: Vec<_> = expected_files().into_iter().map(|(f, _)| f).collect();
        assert_eq!(written, expected);
        assert_eq!(report.files.len(), expected.len());
        assert_eq!(report.files.last(), Some(&report.config));
        assert_eq!(report.config, tmp.path().join("samgate.toml"));
        assert!(tmp.path().join("data").is_dir());
    }

    #[test]
    fn private_keys_have_mode_0600_and_public_files_0644() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let files = snapshot(tmp.path());
        for (file, private) in expected_files() {
            let want = if private { 0o600 } else { 0o644 };
            assert_eq!(files[&file].1, want, "{file}");
        }
    }

    #[test]
    fn second_init_is_refused_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let before = snapshot(tmp.path());
        let err = init(tmp.path(), &InitOptions::default()).unwrap_err();
        match &err {
            InitError::AlreadyInitialised { path } => {
                assert_eq!(path, &tmp.path().join("samgate.toml"));
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("samgate.toml"));
        assert_eq!(snapshot(tmp.path()), before);
    }

    #[test]
    fn a_leftover_key_file_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("keys")).unwrap();
        fs::write(tmp.path().join("keys/vault.key"), b"precious").unwrap();
        let err = init(tmp.path(), &InitOptions::default()).unwrap_err();
        assert!(matches!(&err, InitError::Write { path, .. } if path.ends_with("keys/vault.key")));
        assert_eq!(
            fs::read(tmp.path().join("keys/vault.key")).unwrap(),
            b"precious"
        );
        assert!(!tmp.path().join(CONFIG_FILE).exists());
    }

    #[test]
    fn init_creates_missing_parent_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/deployment");
        init(&dir, &InitOptions::default()).unwrap();
        assert!(dir.join(CONFIG_FILE).is_file());
    }

    #[test]
    fn pinned_fingerprints_match_the_written_party_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let report = init(tmp.path(), &InitOptions::default()).unwrap();
        let cfg = config(tmp.path());
        let parties = cfg["party"].as_array().unwrap();
        assert_eq!(parties.len(), DEMO_PARTIES.len());
        for party in parties {
            let id = party["id"].as_str().unwrap();
            let pem = fs::read_to_string(tmp.path().join(format!("pki/{id}.pem"))).unwrap();
            let der = crate::pki::first_certificate_der(&pem).unwrap();
            let pin = spki_sha256_hex(&der).unwrap();
            assert_eq!(party["certificate_sha256"].as_str().unwrap(), pin, "{id}");
            assert_eq!(report.party(id).unwrap().certificate_sha256, pin);
        }
    }

    /// DESIGN §11: one user per intake and auditor party, with a PKCS#12
    /// (empty password) holding the pinned certificate and its key, and a
    /// configuration that validates (roles within the party's).
    #[test]
    fn console_users_have_pinned_certificates_and_pkcs12_files() {
        let tmp = tempfile::tempdir().unwrap();
        let report = init(tmp.path(), &InitOptions::default()).unwrap();
        let config = crate::config::Config::load(&report.config).unwrap();
        assert_eq!(config.users.len(), DEMO_USERS.len());
        for party in DEMO_PARTIES {
            if party.roles.contains(&"intake") || party.is_auditor() {
                assert!(
                    DEMO_USERS.iter().any(|u| u.party == party.id),
                    "{}",
                    party.id
                );
            }
        }
        let console = config.console.as_ref().unwrap();
        assert_eq!(console.key_id, CONSOLE_ISSUER_KEY_ID);
        assert!(console.signing_key.ends_with("keys/issuer-console.pem"));
        for user in DEMO_USERS {
            let pem =
                fs::read_to_string(tmp.path().join(format!("pki/users/{}.pem", user.id))).unwrap();
            let der = crate::pki::first_certificate_der(&pem).unwrap();
            let pin = spki_sha256_hex(&der).unwrap();
            let configured = config.user(user.id).unwrap();
            assert_eq!(hex::encode(configured.certificate_sha256), pin);
            assert_eq!(configured.party.as_str(), user.party);
            let p12 = fs::read(tmp.path().join(format!("pki/users/{}.p12", user.id))).unwrap();
            let store = p12_keystore::KeyStore::from_pkcs12(
                &p12,
                "",
                p12_keystore::Pkcs12ImportPolicy::default(),
            )
            .unwrap();
            let (_, chain) = store.private_key_chain().unwrap();
            assert_eq!(chain.certs()[0].as_der(), der.as_slice());
            let key_pem =
                fs::read_to_string(tmp.path().join(format!("pki/users/{}.key", user.id))).unwrap();
            assert_eq!(
                chain.key().as_der(),
                pem::parse(key_pem).unwrap().contents()
            );
        }
    }

    #[test]
    fn user_roles_must_be_within_the_party_and_pins_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let report = init(tmp.path(), &InitOptions::default()).unwrap();
        let text = fs::read_to_string(&report.config).unwrap();
        let af_pin = report.party("af").unwrap().certificate_sha256.clone();
        let anna = &report.users[0].certificate_sha256;
        let bad = text
            .replacen(
                "roles = [\"intake\"]\ncertificate",
                "roles = [\"auditor\"]\ncertificate",
                1,
            )
            .replacen(anna.as_str(), &af_pin, 1);
        let err = crate::config::Config::from_toml_str(&bad, tmp.path(), &report.config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("role `auditor` is not one of party `sfk-kalmar`'s roles"),
            "{err}"
        );
        assert!(err.contains("already pinned to party `af`"), "{err}");
    }

    #[test]
    fn generated_config_parses_and_has_the_contract_shape() {
        let tmp = tempfile::tempdir().unwrap();
        let report = init(tmp.path(), &InitOptions::default()).unwrap();
        let cfg = config(tmp.path());

        let server = cfg["server"].as_table().unwrap();
        assert_eq!(server["listen"].as_str(), Some("127.0.0.1:8443"));
        let deployment_id = server["deployment_id"].as_str().unwrap();
        assert_eq!(deployment_id, report.deployment_id);
        assert_eq!(deployment_id.len(), "kalmar-".len() + 8);
        assert!(deployment_id.starts_with("kalmar-"));
        assert_eq!(server["rate_limit_per_party"].as_integer(), Some(2000));
        assert_eq!(
            cfg["storage"]["url"].as_str(),
            Some("sqlite://data/samgate.db")
        );
        // Every configured path names a file that init wrote.
        for (section, key) in [
            ("server", "certificate"),
            ("server", "private_key"),
            ("server", "client_ca"),
            ("server", "outbound_ca"),
            ("server", "outbound_certificate"),
            ("server", "outbound_private_key"),
            ("keys", "pseudonym_master"),
            ("keys", "vault"),
            ("keys", "audit_signing"),
            ("keys", "delivery_signing"),
        ] {
            let path = cfg[section][key].as_str().unwrap();
            assert!(tmp.path().join(path).is_file(), "{section}.{key}");
        }

        let issuers = cfg["consent_issuer"].as_array().unwrap();
        // The demo intake system, and the console's built-in issuer (DESIGN §11).
        assert_eq!(issuers.len(), 2);
        assert_eq!(issuers[1]["id"].as_str(), Some("console"));
        assert_eq!(issuers[0]["id"].as_str(), Some("sfk-kalmar-intake"));
        assert_eq!(issuers[0]["key_id"].as_str(), Some("2026-1"));
        assert!(tmp
            .path()
            .join(issuers[0]["public_key"].as_str().unwrap())
            .is_file());

        let parties = cfg["party"].as_array().unwrap();
        let endpoints: Vec<_> = parties
            .iter()
            .filter_map(|p| Some((p["id"].as_str()?, p.get("endpoint")?.as_str()?)))
            .collect();
        assert_eq!(
            endpoints,
            [
                ("fk", "https://127.0.0.1:9101/inbox"),
                ("af", "https://127.0.0.1:9102/inbox"),
                ("kommun-kalmar", "https://127.0.0.1:9103/inbox"),
                ("region-kalmar", "https://127.0.0.1:9104/inbox"),
                ("sfk-kalmar", "https://127.0.0.1:9105/inbox"),
            ]
        );
        let af = &parties[1];
        assert_eq!(af["name"].as_str(), Some("Arbetsförmedlingen"));
        assert_eq!(af["kind"].as_str(), Some("arbetsformedlingen"));
        assert_eq!(af["roles"].as_array().unwrap().len(), 1);
        let audit = parties
            .iter()
            .find(|p| p["id"].as_str() == Some("sfk-kalmar-audit"))
            .unwrap();
        assert!(audit.get("endpoint").is_none());
        assert_eq!(audit["roles"][0].as_str(), Some("auditor"));
        let jwt = audit["jwt_issuer"].as_table().unwrap();
        assert_eq!(jwt["iss"].as_str(), Some("sfk-kalmar-audit-users"));
        assert_eq!(jwt["audience"].as_str(), Some("samgate"));
        assert!(tmp
            .path()
            .join(jwt["public_key"].as_str().unwrap())
            .is_file());
        assert_eq!(
            parties
                .iter()
                .filter(|p| p.get("jwt_issuer").is_some())
                .count(),
            1
        );

        let routes = cfg["route"].as_array().unwrap();
        assert!(routes.iter().any(|r| {
            r["type"].as_str() == Some("attendance-report")
                && r["from"][0].as_str() == Some("af")
                && r["to"][0].as_str() == Some("fk")
        }));
    }

    #[test]
    fn options_set_listen_address_ports_and_gateway_san() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            listen: "10.1.2.3:9443".parse().unwrap(),
            recipient_base_port: 20000,
        };
        let report = init(tmp.path(), &opts).unwrap();
        let cfg = config(tmp.path());
        assert_eq!(cfg["server"]["listen"].as_str(), Some("10.1.2.3:9443"));
        assert_eq!(
            report.party("sfk-kalmar").unwrap().endpoint.as_deref(),
            Some("https://127.0.0.1:20004/inbox")
        );
        let pem = fs::read_to_string(tmp.path().join("pki/gateway.pem")).unwrap();
        let der = crate::pki::first_certificate_der(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap().value;
        assert!(sans
            .general_names
            .contains(&x509_parser::extensions::GeneralName::IPAddress(&[
                10, 1, 2, 3
            ])));
    }

    #[test]
    fn ports_beyond_65535_are_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            recipient_base_port: 65532,
            ..InitOptions::default()
        };
        let err = init(tmp.path(), &opts).unwrap_err();
        assert!(matches!(
            err,
            InitError::PortOutOfRange {
                party: "sfk-kalmar"
            }
        ));
        assert!(snapshot(tmp.path()).is_empty());
    }

    #[test]
    fn secret_and_signing_keys_are_usable() {
        use ring::signature::{Ed25519KeyPair, KeyPair as _};
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let pseudonym = fs::read(tmp.path().join("keys/pseudonym.key")).unwrap();
        let vault = fs::read(tmp.path().join("keys/vault.key")).unwrap();
        assert_eq!(pseudonym.len(), 32);
        assert_eq!(vault.len(), 32);
        assert_ne!(pseudonym, vault);

        for stem in [
            "issuer-sfk-kalmar-intake",
            "audit",
            "delivery",
            "users-sfk-kalmar-audit",
        ] {
            let private = fs::read(tmp.path().join(format!("keys/{stem}.pem"))).unwrap();
            let public = fs::read(tmp.path().join(format!("keys/{stem}.pub.pem"))).unwrap();
            let private = x509_parser::pem::parse_x509_pem(&private).unwrap().1;
            let public = x509_parser::pem::parse_x509_pem(&public).unwrap().1;
            assert_eq!(private.label, "PRIVATE KEY");
            assert_eq!(public.label, "PUBLIC KEY");
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&private.contents).unwrap();
            // An Ed25519 SPKI is a 12-byte header followed by the raw key.
            assert_eq!(&public.contents[12..], pair.public_key().as_ref(), "{stem}");
        }

        let ca = crate::pki::Ca::from_pem(
            &fs::read_to_string(tmp.path().join("pki/ca.pem")).unwrap(),
            &fs::read_to_string(tmp.path().join("pki/ca.key")).unwrap(),
        )
        .unwrap();
        ca.issue_client("new-party").unwrap();
    }

    #[test]
    fn toml_strings_are_escaped() {
        for s in [
            "plain",
            "Försäkringskassan",
            "quote \" and \\ back",
            "tab\tnl\n\u{1}",
        ] {
            let doc = format!("v = {}", toml_string(s));
            let table: toml::Table = doc.parse().unwrap();
            assert_eq!(table["v"].as_str(), Some(s));
        }
    }

    #[test]
    fn demo_parties_match_the_design() {
        let ids: Vec<_> = DEMO_PARTIES.iter().map(|p| p.id).collect();
        assert_eq!(
            ids,
            [
                "fk",
                "af",
                "kommun-kalmar",
                "region-kalmar",
                "sfk-kalmar",
                "sfk-kalmar-audit"
            ]
        );
        let auditors: Vec<_> = DEMO_PARTIES.iter().filter(|p| p.is_auditor()).collect();
        assert_eq!(auditors.len(), 1);
        assert!(!auditors[0].has_endpoint);
    }
}
