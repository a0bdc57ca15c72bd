//! `samgate check --config FILE [--json]` (issue #19): checks a deployment
//! before it serves, without changing anything.
//!
//! - the configuration file (it must load; otherwise exit 2 with its issues);
//! - every private key file: mode (no access for group or others) and type
//!   (32 raw bytes for the secrets, Ed25519 PKCS#8 for the signing keys, a
//!   PEM private key matching its certificate for the TLS keys);
//! - every public key file (consent issuers, user-token issuers): Ed25519 or
//!   P-256;
//! - every certificate file: it parses, chains (to `client_ca` or
//!   `outbound_ca`, or a self-signed root in the same file) and is not
//!   expired, not yet valid or expiring within 30 days;
//! - the database: reachable, opened read-only (never created), at this
//!   binary's migration level (never migrated);
//! - every recipient endpoint: a TLS handshake with the gateway's outbound
//!   client certificate, the server's chain verified against `outbound_ca`
//!   and its SPKI SHA-256 reported (and compared with
//!   `endpoint_certificate_sha256` where the configuration pins one).
//!
//! Exit 0 when nothing was found, 1 when something was (one `FAIL` line
//! each), 2 for usage and configuration errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;

use crate::config::{Config, SecretSource};

/// Certificates expiring sooner than this are a finding.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30 * 86_400);

/// How long the endpoint probe may take per recipient.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One checked item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Item {
    /// What was checked: a config key (`server.private_key`,
    /// `party[3].endpoint`) or `storage`.
    pub key: String,
    /// `ok` or `fail`.
    pub status: &'static str,
    /// The finding, or what was verified.
    pub detail: String,
}

/// The outcome of a check run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every checked item in order.
    pub checks: Vec<Item>,
}

impl Report {
    fn ok(&mut self, key: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Item {
            key: key.into(),
            status: "ok",
            detail: detail.into(),
        });
    }
    fn fail(&mut self, key: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Item {
            key: key.into(),
            status: "fail",
            detail: detail.into(),
        });
    }
    /// The findings only.
    pub fn findings(&self) -> impl Iterator<Item = &Item> {
        self.checks.iter().filter(|c| c.status == "fail")
    }
}

/// `samgate check`.
pub async fn run(path: &Path, json: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "config_error": e.to_string()})
                );
            }
            eprintln!("samgate check: {e}");
            return ExitCode::from(2);
        }
    };
    let mut report = check(path, &config).await;
    report.checks.sort_by_key(|c| c.status != "fail");
    let failed = report.findings().count();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": failed == 0,
                "findings": report.findings().collect::<Vec<_>>(),
                "checks": report.checks,
            })
        );
    } else {
        for c in &report.checks {
            let tag = if c.status == "fail" { "FAIL" } else { "ok  " };
            println!("{tag} {}: {}", c.key, c.detail);
        }
        println!("{} checks, {failed} findings", report.checks.len());
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs every check of the module docs.
pub async fn check(config_path: &Path, config: &Config) -> Report {
    let mut r = Report::default();
    check_config_file(&mut r, config_path);
    check_private_files(&mut r, config);
    check_public_keys(&mut r, config);
    check_certificates(&mut r, config);
    check_database(&mut r, config).await;
    check_endpoints(&mut r, config).await;
    r
}

fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn check_config_file(r: &mut Report, path: &Path) {
    match mode_of(path) {
        Some(mode) if mode & 0o022 != 0 => r.fail(
            "config",
            format!(
                "{} is writable by group or others (mode {mode:04o}); use 0600",
                path.display()
            ),
        ),
        _ => r.ok("config", format!("{} loads", path.display())),
    }
}

/// Mode check: `true` when the file may be read further.
fn private_mode(r: &mut Report, key: &str, path: &Path) -> bool {
    match mode_of(path) {
        Some(mode) if mode & 0o077 != 0 => {
            r.fail(
                key,
                format!(
                    "{} is accessible by group or others (mode {mode:04o}); use 0600",
                    path.display()
                ),
            );
            false
        }
        _ => true,
    }
}

fn check_private_files(r: &mut Report, c: &Config) {
    let mut secrets: Vec<(String, &SecretSource)> = vec![
        ("keys.pseudonym_master".into(), &c.keys.pseudonym_master),
        ("keys.vault".into(), &c.keys.vault),
    ];
    for (i, s) in c.keys.vault_previous.iter().enumerate() {
        secrets.push((format!("keys.vault[{}]", i + 1), s));
    }
    for (key, src) in secrets {
        match src {
            SecretSource::Env(var) => match crate::keys::load_secret32_env(var) {
                Ok(s) => r.ok(key, format!("env:{var}, key id {}", s.key_id())),
                Err(e) => r.fail(key, e.to_string()),
            },
            SecretSource::File(p) => {
                if private_mode(r, &key, p) {
                    match crate::keys::load_secret32(p) {
                        Ok(s) => r.ok(key, format!("32-byte key, key id {}", s.key_id())),
                        Err(e) => r.fail(key, e.to_string()),
                    }
                }
            }
        }
    }
    for (key, p) in [
        ("keys.audit_signing", &c.keys.audit_signing),
        ("keys.delivery_signing", &c.keys.delivery_signing),
    ] {
        if private_mode(r, key, p) {
            match crate::keys::load_ed25519_private(p) {
                Ok(s) => r.ok(key, format!("Ed25519 signing key, key id {}", s.key_id())),
                Err(e) => r.fail(key, e.to_string()),
            }
        }
    }
    for (key, cert, pk) in [
        (
            "server.private_key",
            &c.server.certificate,
            &c.server.private_key,
        ),
        (
            "server.outbound_private_key",
            &c.server.outbound_certificate,
            &c.server.outbound_private_key,
        ),
    ] {
        if !private_mode(r, key, pk) {
            continue;
        }
        match keys_match(cert, pk) {
            Ok(()) => r.ok(key, "private key matches its certificate"),
            Err(e) => r.fail(key, e),
        }
    }
}

fn keys_match(cert: &Path, key: &Path) -> Result<(), String> {
    let chain = crate::tls::load_certs(cert).map_err(|e| e.to_string())?;
    let der = crate::tls::load_key(key).map_err(|e| e.to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    rustls::sign::CertifiedKey::new(chain, signing)
        .keys_match()
        .map_err(|e| format!("does not match the certificate {}: {e}", cert.display()))
}

fn check_public_keys(r: &mut Report, c: &Config) {
    use jsonwebtoken::Algorithm;
    let mut files: Vec<(String, &PathBuf)> = Vec::new();
    for (i, ci) in c.consent_issuers.iter().enumerate() {
        files.push((format!("consent_issuer[{i}].public_key"), &ci.public_key));
    }
    for (i, p) in c.parties.iter().enumerate() {
        if let Some(j) = &p.jwt_issuer {
            files.push((format!("party[{i}].jwt_issuer.public_key"), &j.public_key));
        }
    }
    for (key, path) in files {
        match crate::auth::jwt::PublicKeyFile::load(path) {
            Ok(f) if matches!(f.alg, Algorithm::EdDSA | Algorithm::ES256) => {
                r.ok(key, format!("{:?} public key", f.alg))
            }
            Ok(_) => r.fail(key, "must be an Ed25519 or P-256 public key"),
            Err(e) => r.fail(key, e.to_string()),
        }
    }
}

/// The certificate files of a configuration, by config key (also used for
/// `samgate_certificate_expiry_seconds`).
pub fn certificate_files(c: &Config) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("server.certificate", c.server.certificate.clone()),
        (
            "server.outbound_certificate",
            c.server.outbound_certificate.clone(),
        ),
        ("server.client_ca", c.server.client_ca.clone()),
        ("server.outbound_ca", c.server.outbound_ca.clone()),
    ]
}

/// The earliest `notAfter` (Unix seconds) of the certificates in a PEM file.
pub fn earliest_not_after(path: &Path) -> Result<i64, String> {
    let certs = crate::tls::load_certs(path).map_err(|e| e.to_string())?;
    let mut out = i64::MAX;
    for c in &certs {
        let (_, x) = x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|_| format!("{}: a certificate does not parse", path.display()))?;
        out = out.min(x.validity().not_after.timestamp());
    }
    Ok(out)
}

/// Validity findings of one DER certificate at `now` (Unix seconds).
fn validity(der: &[u8], now: i64) -> Result<String, String> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| "the certificate does not parse".to_owned())?;
    let v = x.validity();
    let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
    let subject = x.subject().to_string();
    let until = time::OffsetDateTime::from_unix_timestamp(na)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| na.to_string());
    if now < nb {
        return Err(format!("certificate `{subject}` is not valid yet"));
    }
    if now >= na {
        return Err(format!("certificate `{subject}` expired at {until}"));
    }
    let margin = i64::try_from(EXPIRY_MARGIN.as_secs()).unwrap_or(i64::MAX);
    if na - now < margin {
        return Err(format!(
            "certificate `{subject}` expires at {until}, within 30 days"
        ));
    }
    Ok(format!("`{subject}` valid until {until}"))
}

fn anchors(c: &Config, own: &[CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for p in [&c.server.client_ca, &c.server.outbound_ca] {
        if let Ok(certs) = crate::tls::load_certs(p) {
            for cert in certs {
                let _ = roots.add(cert);
            }
        }
    }
    for cert in own {
        if let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            if x.subject() == x.issuer() {
                let _ = roots.add(cert.clone());
            }
        }
    }
    roots
}

fn check_certificates(r: &mut Report, c: &Config) {
    #[expect(
        clippy::disallowed_methods,
        reason = "samgate check compares certificates with the real time"
    )]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (key, path) in certificate_files(c) {
        let certs = match crate::tls::load_certs(&path) {
            Ok(v) => v,
            Err(e) => {
                r.fail(key, e.to_string());
                continue;
            }
        };
        let mut bad = Vec::new();
        let mut good = String::new();
        for cert in &certs {
            match validity(cert.as_ref(), now) {
                Ok(d) => {
                    if good.is_empty() {
                        good = d
                    }
                }
                Err(e) => bad.push(e),
            }
        }
        if key.ends_with("_ca") {
            // A CA file is a set of trust anchors: validity only.
        } else if let Err(e) = chains(c, key, &certs) {
            bad.push(e);
        }
        if bad.is_empty() {
            r.ok(key, good);
        } else {
            for b in bad {
                r.fail(key, b);
            }
        }
    }
}

fn chains(c: &Config, key: &str, certs: &[CertificateDer<'static>]) -> Result<(), String> {
    let roots = Arc::new(anchors(c, certs));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some((leaf, rest)) = certs.split_first() else {
        return Err("no certificate".into());
    };
    // Expiry is reported by `validity` with its margin; the chain is checked
    // at a time when every certificate is valid, so that an expired leaf is
    // one finding, not two.
    let at = chain_time(certs);
    if key == "server.outbound_certificate" {
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("no usable trust anchor: {e}"))?;
        v.verify_client_cert(leaf, rest, at)
            .map(|_| ())
            .map_err(|e| format!("does not chain to server.client_ca or server.outbound_ca: {e}"))
    } else {
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("no usable trust anchor: {e}"))?;
        let name = first_name(leaf).ok_or("the certificate names no DNS name or IP address")?;
        v.verify_server_cert(leaf, rest, &name, &[], at)
            .map(|_| ())
            .map_err(|e| format!("does not chain to server.client_ca or server.outbound_ca: {e}"))
    }
}

fn chain_time(certs: &[CertificateDer<'_>]) -> UnixTime {
    let mut lo = 0i64;
    let mut hi = i64::MAX;
    for c in certs {
        if let Ok((_, x)) = x509_parser::parse_x509_certificate(c.as_ref()) {
            lo = lo.max(x.validity().not_before.timestamp());
            hi = hi.min(x.validity().not_after.timestamp());
        }
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "samgate check compares certificates with the real time"
    )]
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let t = if now >= lo && now < hi {
        now
    } else {
        lo.saturating_add(1)
    };
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
}

fn first_name(leaf: &CertificateDer<'_>) -> Option<ServerName<'static>> {
    use x509_parser::extensions::GeneralName;
    let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = x.subject_alternative_name().ok()??;
    for n in &san.value.general_names {
        match n {
            GeneralName::DNSName(d) => {
                if let Ok(s) = ServerName::try_from(d.to_string()) {
                    return Some(s);
                }
            }
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                if let Some(ip) = ip {
                    return Some(ServerName::IpAddress(ip.into()));
                }
            }
            _ => {}
        }
    }
    None
}

async fn check_database(r: &mut Report, c: &Config) {
    // A fresh deployment: the SQLite file is created by the first
    // `samgate serve`, never by a check.
    if let Some(rest) = c.storage.url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or(rest);
        if !path.starts_with(':') && !Path::new(path).exists() {
            r.ok(
                "storage",
                format!("database file {path} does not exist yet; `samgate serve` creates it"),
            );
            return;
        }
    }
    let store = match crate::store::Store::connect_read_only(&c.storage).await {
        Ok(s) => s,
        Err(e) => {
            r.fail("storage", e.to_string());
            return;
        }
    };
    match store.migration_level().await {
        Ok((0, known)) => r.ok(
            "storage",
            format!("reachable, empty: `samgate serve` creates the schema (migration {known})"),
        ),
        Ok((applied, known)) if applied < known => r.fail(
            "storage",
            format!("the database is at migration {applied}, this binary expects {known}; `samgate serve` applies the rest"),
        ),
        Ok((applied, known)) if applied > known => r.fail(
            "storage",
            format!("the database is at migration {applied}, newer than this binary knows ({known}); upgrade samgate"),
        ),
        Ok((applied, _)) => r.ok(
            "storage",
            format!("{:?} reachable, migration {applied}", store.backend()),
        ),
        Err(e) => r.fail("storage", e.to_string()),
    }
    store.close().await;
}

async fn check_endpoints(r: &mut Report, c: &Config) {
    let tls = match crate::tls::client_config(
        &c.server.outbound_ca,
        &c.server.outbound_certificate,
        &c.server.outbound_private_key,
    ) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            r.fail(
                "server.outbound_ca",
                format!("cannot build the outbound TLS client: {e}"),
            );
            return;
        }
    };
    for (i, p) in c.parties.iter().enumerate() {
        let Some(ep) = &p.endpoint else { continue };
        let key = format!("party[{i}].endpoint");
        match probe(tls.clone(), ep).await {
            Ok(probe) => {
                let spki = hex::encode(probe.spki);
                #[expect(
                    clippy::disallowed_methods,
                    reason = "samgate check compares certificates with the real time"
                )]
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let mut failed = false;
                if let Err(e) = validity(&probe.leaf, now) {
                    r.fail(&key, format!("{ep}: {e}"));
                    failed = true;
                }
                if let Some(pin) = endpoint_pin(p) {
                    if pin != probe.spki {
                        r.fail(
                            &key,
                            format!(
                                "{ep}: the certificate's SPKI SHA-256 is {spki}, not the pinned {}",
                                hex::encode(pin)
                            ),
                        );
                        failed = true;
                    }
                }
                if !failed {
                    r.ok(&key, format!("{ep}: TLS verified, SPKI SHA-256 {spki}"));
                }
            }
            Err(e) => r.fail(&key, format!("{ep}: {e}")),
        }
    }
}

/// The party's pinned endpoint certificate (`[[party]]
/// endpoint_certificate_sha256`, DESIGN §10), when the configuration has one.
fn endpoint_pin(p: &crate::config::PartyConfig) -> Option<[u8; 32]> {
    p.endpoint_certificate_sha256
}

struct Probe {
    leaf: Vec<u8>,
    spki: [u8; 32],
}

async fn probe(tls: Arc<rustls::ClientConfig>, endpoint: &str) -> Result<Probe, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("not a URL: {e}"))?;
    let host = url.host_str().ok_or("no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let host_for_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = ServerName::try_from(host_for_name.clone())
        .map_err(|_| format!("`{host}` is not a valid server name"))?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host_for_name.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("the endpoint presented no certificate")?;
        let spki = crate::tls::peer_spki_sha256(&leaf)
            .ok_or("the endpoint's certificate does not parse")?;
        Ok::<_, String>(Probe {
            leaf: leaf.as_ref().to_vec(),
            spki,
        })
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .map_err(|_| format!("no TLS handshake within {}s", PROBE_TIMEOUT.as_secs()))?
}
