//! `samgate witness init` and `samgate witness serve` (DESIGN §12).

use std::path::PathBuf;
use std::process::ExitCode;

/// `samgate witness ...`
#[derive(Debug, clap::Subcommand)]
pub enum WitnessCommand {
    /// Write a witness's keys, TLS certificate and witness.toml into DIR.
    Init {
        /// Target directory (created if missing; refuses an existing witness.toml).
        #[arg(long)]
        dir: PathBuf,
        /// The witness name (key name of its cosignatures), e.g. `fk-witness`.
        #[arg(long)]
        name: String,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9201")]
        listen: std::net::SocketAddr,
        /// Origin of the log to witness (`samgate/<deployment id>`).
        #[arg(long = "log-origin", requires = "log_key")]
        log_origin: Option<String>,
        /// The log's public key (SPKI PEM or vkey), path as written into witness.toml.
        #[arg(long = "log-key", requires = "log_origin")]
        log_key: Option<String>,
        /// CA of the gateway's client certificate, path as written into witness.toml.
        #[arg(long = "client-ca", default_value = "client-ca.pem")]
        client_ca: String,
        /// SPKI SHA-256 (hex) of an allowed client certificate (repeatable).
        #[arg(long = "client-sha256")]
        client_sha256: Vec<String>,
        /// Issue the server certificate from this CA (PEM) instead of a fresh one.
        #[arg(long = "ca-cert", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The CA's private key (PKCS#8 PEM).
        #[arg(long = "ca-key", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
    },
    /// Serve add-checkpoint until SIGINT/SIGTERM.
    Serve {
        /// The witness configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs a witness command.
pub async fn run(cmd: WitnessCommand) -> ExitCode {
    match cmd {
        WitnessCommand::Init {
            dir,
            name,
            listen,
            log_origin,
            log_key,
            client_ca,
            client_sha256,
            ca_cert,
            ca_key,
        } => {
            let ca = match (ca_cert, ca_key) {
                (Some(c), Some(k)) => {
                    let read = |p: &PathBuf| {
                        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
                    };
                    match read(&c)
                        .and_then(|c| Ok((c, read(&k)?)))
                        .and_then(|(c, k)| {
                            crate::pki::Ca::from_pem(&c, &k).map_err(|e| e.to_string())
                        }) {
                        Ok(ca) => Some(ca),
                        Err(e) => {
                            eprintln!("samgate witness init: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                _ => None,
            };
            let opts = super::init::WitnessInit {
                name,
                listen,
                logs: log_origin.zip(log_key).into_iter().collect(),
                client_ca,
                client_pins: client_sha256,
            };
            match super::init::init(&dir, &opts, ca.as_ref()) {
                Ok(key) => {
                    println!("wrote {}", dir.join(super::init::CONFIG_FILE).display());
                    println!("witness key: {}", key.to_vkey());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("samgate witness init: {e}");
                    ExitCode::from(2)
                }
            }
        }
        WitnessCommand::Serve { config } => {
            let cfg = match super::config::WitnessConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("samgate witness: {e}");
                    return ExitCode::from(2);
                }
            };
            let server = match super::server::WitnessServer::start(&cfg).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("samgate witness: {e}");
                    return ExitCode::from(2);
                }
            };
            println!("witness {} listening on {}", cfg.name, server.addr);
            crate::http::server::termination_signal().await;
            server.stop().await;
            ExitCode::SUCCESS
        }
    }
}
