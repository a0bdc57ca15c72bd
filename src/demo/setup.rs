//! The demo's deployment: a working set from `samgate init` in a temporary
//! directory (or the `--keep` directory), the gateway on an ephemeral
//! loopback port with SQLite, and one in-process recipient per receiving
//! party with the configuration's endpoints patched to their ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::client::PartyClient;
use super::out::Out;
use super::recipient::Inbox;
use super::DemoError;
use crate::config::Config;
use crate::http::server::Gateway;
use crate::state::AppState;

/// The auditor party of the demo configuration (DESIGN §9).
pub const AUDITOR: &str = "sfk-kalmar-audit";
/// The intake party that records consents and asks for register extracts.
pub const INTAKE: &str = "sfk-kalmar";

/// Where the working set lives: removed at the end unless kept.
enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

/// A running demo deployment.
pub struct Deployment {
    dir: Dir,
    /// The configuration as running (ports patched).
    pub config: Config,
    gateway: Option<Gateway>,
    /// The gateway's mTLS address.
    pub addr: SocketAddr,
    /// Recipient endpoints by party id.
    pub inboxes: BTreeMap<String, Inbox>,
    clients: BTreeMap<String, PartyClient>,
    /// The agencies' witnesses (DESIGN §12), in configuration order.
    witnesses: Vec<crate::witness::server::WitnessServer>,
}

impl Deployment {
    /// Writes (or, with `--keep` on an initialised directory, reuses) the
    /// working set and starts everything.
    pub async fn start(keep: Option<&Path>, out: &Out) -> Result<Deployment, DemoError> {
        out.title("samgate demo: one participant's path through the Kalmar team");
        out.chapter("Setting up a throw-away deployment");
        let dir = match keep {
            Some(p) => Dir::Kept(p.to_owned()),
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("samgate-demo-")
                    .tempdir()
                    .map_err(|e| DemoError::Setup(format!("temporary directory: {e}")))?,
            ),
        };
        let path = match &dir {
            Dir::Temp(t) => t.path().to_owned(),
            Dir::Kept(p) => p.clone(),
        };
        let config_file = path.join(crate::init::CONFIG_FILE);
        if keep.is_some() && config_file.exists() {
            out.line(&format!("reusing the working set in {}", path.display()));
        } else {
            out.progress("generating a CA, certificates and keys");
            crate::init::init(&path, &crate::init::InitOptions::default())?;
            out.line(&format!(
                "samgate init wrote a CA, certificates and keys for 6 parties to {}",
                path.display()
            ));
        }
        let mut config = Config::load(&config_file)?;
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.metrics_listen = None;

        let mut inboxes = BTreeMap::new();
        for party in config.parties.iter_mut() {
            if party.endpoint.is_none() {
                continue;
            }
            let inbox = Inbox::start(&path, party.id.as_str()).await?;
            party.endpoint = Some(format!("https://127.0.0.1:{}/inbox", inbox.addr.port()));
            inboxes.insert(party.id.as_str().to_owned(), inbox);
        }
        out.progress("starting the agencies' witnesses");
        let mut witnesses = Vec::new();
        for w in config.witnesses.iter_mut() {
            let file = w
                .public_key
                .with_file_name(crate::witness::init::CONFIG_FILE);
            let mut wc =
                crate::witness::config::WitnessConfig::load(&file).map_err(DemoError::Setup)?;
            wc.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            let server = crate::witness::server::WitnessServer::start(&wc)
                .await
                .map_err(DemoError::Setup)?;
            w.url = format!("https://127.0.0.1:{}", server.addr.port());
            witnesses.push(server);
        }
        out.progress("starting the gateway");
        let state = AppState::build(config.clone()).await?;
        let gateway = Gateway::start(state).await?;
        let addr = gateway.addr;
        out.ok(
            "gateway",
            &format!("https://127.0.0.1:{} (mTLS, SQLite)", addr.port()),
        );
        let endpoints: Vec<String> = inboxes
            .values()
            .map(|i| format!("{} :{}", i.party, i.addr.port()))
            .collect();
        out.ok(
            "recipients",
            &format!("{} (HTTPS, accept only the gateway)", endpoints.join(", ")),
        );
        if !witnesses.is_empty() {
            let names: Vec<String> = witnesses
                .iter()
                .map(|w| format!("{} :{}", w.witness.key.name, w.addr.port()))
                .collect();
            out.ok(
                "witnesses",
                &format!(
                    "{} (cosign every checkpoint; quorum {})",
                    names.join(", "),
                    config.audit.witness_quorum
                ),
            );
        }

        let mut clients = BTreeMap::new();
        for party in &config.parties {
            let id = party.id.as_str();
            let bearer = if id == AUDITOR {
                Some(auditor_token(&path)?)
            } else {
                None
            };
            clients.insert(id.to_owned(), PartyClient::new(&path, id, addr, bearer)?);
        }
        Ok(Deployment {
            dir,
            config,
            gateway: Some(gateway),
            addr,
            inboxes,
            clients,
            witnesses,
        })
    }

    /// The working-set directory.
    pub fn path(&self) -> &Path {
        match &self.dir {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }

    /// Whether the working set outlives the demo (`--keep`).
    pub fn kept(&self) -> bool {
        matches!(self.dir, Dir::Kept(_))
    }

    /// The gateway's store (the demo reads older tree heads from it).
    pub fn store(&self) -> Option<&crate::store::Store> {
        self.gateway.as_ref().map(|g| &g.state.store)
    }

    /// The client of a party.
    pub fn client(&self, party: &str) -> Result<&PartyClient, DemoError> {
        self.clients
            .get(party)
            .ok_or_else(|| DemoError::Setup(format!("no party {party} in the configuration")))
    }

    /// Graceful stop: drain, sign the final tree head, stop the recipients.
    pub async fn stop(&mut self) {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown().await;
        }
        for inbox in self.inboxes.values() {
            inbox.stop();
        }
        for w in self.witnesses.drain(..) {
            w.stop().await;
        }
    }
}

/// A user token of `revisor.anna` for the auditor party (10 minutes).
fn auditor_token(dir: &Path) -> Result<String, DemoError> {
    crate::consent::token::sign_user_token(
        &dir.join(format!("keys/users-{AUDITOR}.pem")),
        &format!("{AUDITOR}-users"),
        "revisor.anna",
        "samgate",
        10,
    )
    .map_err(|e| DemoError::Setup(e.to_string()))
}

/// `--keep`: writes an example request and prints curl lines to explore the
/// running deployment (no personnummer on the command line: the body with
/// the subject is in a file).
pub fn explore(d: &Deployment, out: &Out) {
    let base = format!("https://127.0.0.1:{}", d.addr.port());
    let tls = |p: &str| format!("--cert pki/{p}.pem --key pki/{p}.key --cacert pki/ca.pem");
    let example = d.path().join("examples/attendance-af-fk.json");
    let written = std::fs::create_dir_all(d.path().join("examples")).is_ok()
        && std::fs::write(&example, attendance_example()).is_ok();
    out.chapter("Still running: explore it (Ctrl-C stops the gateway and the recipients)");
    out.line(&format!("cd {}", d.path().display()));
    out.line(&format!("curl {} {base}/healthz", tls("af")));
    out.line(&format!("curl {} {base}/v1/keys", tls("af")));
    if written {
        out.line(&format!(
            "curl {} -H 'content-type: application/json' -d @examples/attendance-af-fk.json {base}/v1/exchanges",
            tls("af")
        ));
    }
    out.line(&format!(
        "curl {} -H \"authorization: Bearer $(samgate token sign --key keys/users-{AUDITOR}.pem --iss {AUDITOR}-users --sub revisor.anna)\" {base}/v1/audit/tree-head",
        tls(AUDITOR)
    ));
    console(d, out, &base);
    out.note(
        "samgate.toml keeps the init ports; this run patched the endpoints to the ports above",
    );
}

/// `--keep`: how to open the console in a browser, in three steps.
fn console(d: &Deployment, out: &Out, base: &str) {
    let users = d.path().join("pki/users");
    out.chapter("The console in a browser (DESIGN §11), in three steps");
    out.line(&format!(
        "1. import {}/anna.lind.p12 (intake) or erik.berg.p12 (audit) into the browser, empty password",
        users.display()
    ));
    out.line(&format!(
        "2. trust {}/pki/ca.pem as a certificate authority (or accept the warning once)",
        d.path().display()
    ));
    out.line(&format!(
        "3. open {base}/console/ and choose the certificate \"Anna Lind\" or \"Erik Berg\""
    ));
}

fn attendance_example() -> String {
    let payload: Value = crate::schema::builtin_example("attendance-report")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let body = serde_json::json!({
        "to": "fk",
        "type": "attendance-report",
        "purpose": "samordnad-rehabilitering",
        "subject": super::script::ALVA.number,
        "delivery": "sync",
        "payload": payload,
    });
    serde_json::to_string_pretty(&body).unwrap_or_default()
}
