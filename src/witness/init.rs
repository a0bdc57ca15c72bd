//! `samgate witness init --dir DIR --name NAME`: a witness's working set.
//!
//! | file | what |
//! |---|---|
//! | `witness.toml` | the configuration ([`super::config`]) |
//! | `witness.pem`, `witness.pub.pem` | its Ed25519 cosigning key pair (PKCS#8 / SPKI) |
//! | `witness.vkey` | its public key as a signed-note vkey (type 0x04), for gateways and auditors |
//! | `tls/server.pem`, `tls/server.key` | its HTTPS server certificate (SAN `localhost`, `127.0.0.1`) |
//! | `tls/ca.pem` | only without `--ca-cert`: the throw-away CA that issued the server certificate |
//!
//! Nothing is overwritten; `witness.toml` is written last.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use zeroize::Zeroizing;

use crate::audit::cosign::WitnessKey;
use crate::pki::{generate_ed25519, Ca, TestCa};

/// The configuration file name.
pub const CONFIG_FILE: &str = "witness.toml";

/// What to write.
#[derive(Debug, Clone)]
pub struct WitnessInit {
    /// The witness name (key name of its cosignatures).
    pub name: String,
    /// Its listen address.
    pub listen: SocketAddr,
    /// Witnessed logs: origin and the log key's path as written into the file.
    pub logs: Vec<(String, String)>,
    /// The client CA path as written (relative to the witness directory).
    pub client_ca: String,
    /// Pinned client SPKI SHA-256s (hex).
    pub client_pins: Vec<String>,
}

/// A file to write, relative to the witness directory.
pub struct PlannedFile {
    /// Relative path.
    pub path: String,
    /// Contents.
    pub contents: Zeroizing<Vec<u8>>,
    /// Mode 0600 if true, else 0644.
    pub private: bool,
}

fn file(path: &str, contents: &[u8], private: bool) -> PlannedFile {
    PlannedFile {
        path: path.to_owned(),
        contents: Zeroizing::new(contents.to_vec()),
        private,
    }
}

/// The files of a witness working set, `witness.toml` last. With `ca`, the server
/// certificate is issued by it; without, by a fresh CA written as `tls/ca.pem`.
pub fn plan(opts: &WitnessInit, ca: Option<&Ca>) -> Result<(Vec<PlannedFile>, WitnessKey), String> {
    let key = generate_ed25519().map_err(|e| e.to_string())?;
    let spki = pem::parse(key.spki_pem.as_bytes()).map_err(|e| e.to_string())?;
    let raw: [u8; 32] = spki
        .contents()
        .get(12..)
        .and_then(|k| k.try_into().ok())
        .ok_or("generated key is not Ed25519")?;
    let wkey = WitnessKey::new(&opts.name, raw).map_err(|e| e.to_string())?;
    let mut files = vec![
        file("witness.pem", key.pkcs8_pem.as_bytes(), true),
        file("witness.pub.pem", key.spki_pem.as_bytes(), false),
        file(
            "witness.vkey",
            format!("{}\n", wkey.to_vkey()).as_bytes(),
            false,
        ),
    ];
    let own_ca;
    let ca = match ca {
        Some(ca) => ca,
        None => {
            own_ca = TestCa::generate(&format!("{} witness CA", opts.name))
                .map_err(|e| e.to_string())?;
            files.push(file("tls/ca.pem", own_ca.cert_pem().as_bytes(), false));
            &own_ca
        }
    };
    let server = ca
        .issue_server(
            &format!("{} witness", opts.name),
            &["localhost", "127.0.0.1"],
        )
        .map_err(|e| e.to_string())?;
    files.push(file("tls/server.pem", server.cert_pem().as_bytes(), false));
    files.push(file("tls/server.key", server.key_pem().as_bytes(), true));
    files.push(file(CONFIG_FILE, render(opts).as_bytes(), false));
    Ok((files, wkey))
}

/// Writes a witness working set into `dir` (created if missing); refuses an existing
/// `witness.toml`. Returns the witness key.
pub fn init(dir: &Path, opts: &WitnessInit, ca: Option<&Ca>) -> Result<WitnessKey, String> {
    let config = dir.join(CONFIG_FILE);
    if config.symlink_metadata().is_ok() {
        return Err(format!(
            "{} already exists; refusing to overwrite it",
            config.display()
        ));
    }
    let (files, key) = plan(opts, ca)?;
    std::fs::create_dir_all(dir.join("tls"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for f in &files {
        write_new(&dir.join(&f.path), &f.contents, f.private)?;
    }
    Ok(key)
}

/// Creates `path` (never overwriting) with mode 0600 or 0644.
pub fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), String> {
    use std::io::Write as _;
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        let mut f = options.open(path).map_err(err)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
        f.write_all(contents).map_err(err)?;
        f.sync_all().map_err(err)
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        let mut f = options.open(path).map_err(err)?;
        f.write_all(contents).map_err(err)?;
        f.sync_all().map_err(err)
    }
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn render(opts: &WitnessInit) -> String {
    let mut out = format!(
        r#"# samgate witness (C2SP tlog-witness), written by `samgate witness init`.
# Paths are relative to this file. `samgate witness serve --config witness.toml`.

# The key name of this witness's cosignatures; gateways configure it with
# witness.vkey (or witness.pub.pem and this name).
name = {name}
listen = {listen}
signing_key = "witness.pem"
# Latest cosigned checkpoint per log, and refused checkpoints (evidence).
database = "witness.db"

# HTTPS with client certificates: the gateway's client certificate must chain
# to client_ca and, when listed, have one of these SPKI SHA-256 pins.
[tls]
certificate = "tls/server.pem"
private_key = "tls/server.key"
client_ca = {client_ca}
client_certificate_sha256 = [{pins}]
"#,
        name = q(&opts.name),
        listen = q(&opts.listen.to_string()),
        client_ca = q(&opts.client_ca),
        pins = opts
            .client_pins
            .iter()
            .map(|p| q(p))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if opts.logs.is_empty() {
        out.push_str(
            "\n# The logs this witness cosigns (at least one):\n# [[log]]\n# origin = \"samgate/<deployment id>\"\n# public_key = \"audit.pub.pem\"\n",
        );
    }
    for (origin, key) in &opts.logs {
        let _ = write!(
            out,
            "\n# A gateway's audit log: its checkpoint origin and tree-head key.\n[[log]]\norigin = {}\npublic_key = {}\n",
            q(origin),
            q(key)
        );
    }
    out
}
