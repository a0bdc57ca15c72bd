//! The command line (DESIGN §8.2): a small clap dispatcher. Exit codes:
//! 0 success, 1 a check failed, 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// samgate: consent-aware data exchange gateway for samverkan.
#[derive(Debug, Parser)]
#[command(name = "samgate", version, about, propagate_version = true)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole story in a temporary directory and exit 0.
    Demo {
        /// Keep the directory and leave the gateway running (Ctrl-C stops it).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Write keys, certificates and samgate.toml for a new deployment.
    Init {
        /// Target directory (created if missing; refuses an existing samgate.toml).
        #[arg(long)]
        dir: PathBuf,
        /// Listen address written into the configuration.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
    },
    /// Run the gateway until SIGINT/SIGTERM, then drain.
    Serve {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Consent tokens (for intake systems and tests).
    Consent {
        /// What to do with consents.
        #[command(subcommand)]
        command: ConsentCommand,
    },
    /// User tokens for a party's jwt_issuer.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// A witness that cosigns a gateway's checkpoints (DESIGN §12).
    Witness {
        /// What to do.
        #[command(subcommand)]
        command: crate::witness::cli::WitnessCommand,
    },
    /// The audit log.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Check a deployment without changing it: files, keys, certificates,
    /// the database and every recipient endpoint. Exit 0 / 1 (findings) / 2.
    Check {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object instead of one line per check.
        #[arg(long)]
        json: bool,
    },
    /// Key maintenance.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// `samgate keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-seal every stored sealed value under the first `[keys] vault` key
    /// and print the counts (the other listed keys open the old values).
    RotateVault {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// `samgate consent ...`
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Sign a consent and print the compact JWS on one line.
    Sign(crate::consent::cli::SignCommand),
}

/// Arguments of `samgate consent sign`.
#[derive(Debug, clap::Args)]
pub struct ConsentSignArgs {
    /// Issuer private key (PKCS#8 PEM, Ed25519 or P-256).
    #[arg(long)]
    pub key: PathBuf,
    /// Issuer id (`iss`).
    #[arg(long)]
    pub issuer: String,
    /// Key id (`kid`).
    #[arg(long = "key-id")]
    pub key_id: String,
    /// The participant's personnummer. Not an argument: on the command line
    /// it comes from `--subject-file` (see [`crate::consent::cli::SignCommand`]).
    #[arg(skip)]
    pub subject: String,
    /// Party ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub parties: Vec<String>,
    /// Purposes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub purposes: Vec<String>,
    /// Data categories, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub categories: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// How consent was given: bankid, written, oral-documented.
    #[arg(long, default_value = "bankid")]
    pub method: String,
    /// Staff member who recorded it.
    #[arg(long = "recorded-by", default_value = "intake-staff")]
    pub recorded_by: String,
    /// A representative who gave the consent, as ROLE:NAME (role guardian,
    /// god-man, forvaltare or fullmakt), e.g. `guardian:Karin Exempeldotter`.
    #[arg(long = "given-by", value_name = "ROLE:NAME")]
    pub given_by: Option<String>,
    /// The participant has a protected identity (skyddade personuppgifter).
    #[arg(long = "protected-identity")]
    pub protected_identity: bool,
}

/// `samgate token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a user JWT (EdDSA) and print it.
    Sign {
        /// Issuer private key (PKCS#8 PEM, Ed25519).
        #[arg(long)]
        key: PathBuf,
        /// `iss`.
        #[arg(long)]
        iss: String,
        /// The user (`sub`).
        #[arg(long)]
        sub: String,
        /// `aud`.
        #[arg(long, default_value = "samgate")]
        aud: String,
        /// Lifetime in minutes.
        #[arg(long, default_value_t = 60)]
        minutes: u32,
    },
}

/// `samgate audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the log offline; exit 0 with the verified size, else 1.
    Verify {
        /// Verify the database of this configuration.
        #[arg(long, conflicts_with = "export")]
        config: Option<PathBuf>,
        /// Verify an NDJSON export.
        #[arg(long, requires = "public_key")]
        export: Option<PathBuf>,
        /// The audit public key (SPKI PEM) for --export.
        #[arg(long = "public-key")]
        public_key: Option<PathBuf>,
        /// A checkpoint kept earlier (the signed note, or a saved tree-head JSON): the log
        /// must contain that tree (DESIGN §12).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// A witness key (vkey file) whose cosignature counts (repeatable).
        #[arg(long = "witness-key")]
        witness_key: Vec<PathBuf>,
        /// Valid cosignatures required (default: a majority of the witness keys).
        #[arg(long)]
        quorum: Option<usize>,
        /// Verify a register extract saved with "proofs": true instead of a log.
        #[arg(long, conflicts_with_all = ["export", "checkpoint"])]
        disclosure: Option<PathBuf>,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("samgate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(dispatch(cli.command))
}

async fn dispatch(cmd: Command) -> ExitCode {
    match cmd {
        Command::Demo { keep } => crate::demo::run(keep).await,
        Command::Init { dir, listen } => init(dir, listen),
        Command::Witness { command } => crate::witness::cli::run(command).await,
        Command::Serve { config } => serve(config).await,
        Command::Consent {
            command: ConsentCommand::Sign(args),
        } => crate::consent::cli::sign(args),
        Command::Token {
            command:
                TokenCommand::Sign {
                    key,
                    iss,
                    sub,
                    aud,
                    minutes,
                },
        } => crate::consent::cli::token_sign(&key, &iss, &sub, &aud, minutes),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    export,
                    public_key,
                    checkpoint,
                    witness_key,
                    quorum,
                    disclosure,
                },
        } => {
            crate::audit::cli::verify_with(crate::audit::cli::VerifyOptions {
                config,
                export,
                public_key,
                checkpoint,
                witness_keys: witness_key,
                quorum,
                disclosure,
            })
            .await
        }
        Command::Check { config, json } => crate::check::run(&config, json).await,
        Command::Keys {
            command: KeysCommand::RotateVault { config },
        } => crate::rotate::run(&config).await,
    }
}

fn init(dir: PathBuf, listen: std::net::SocketAddr) -> ExitCode {
    let opts = crate::init::InitOptions {
        listen,
        ..crate::init::InitOptions::default()
    };
    match crate::init::init(&dir, &opts) {
        Ok(_) => {
            println!("wrote {}", dir.join("samgate.toml").display());
            println!(
                "start it with: samgate serve --config {}",
                dir.join("samgate.toml").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("samgate init: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let config = match crate::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("samgate: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match crate::state::AppState::build(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("samgate: {e}");
            return ExitCode::from(2);
        }
    };
    let gw = match crate::http::server::Gateway::start(state).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("samgate: {e}");
            return ExitCode::from(2);
        }
    };
    #[cfg(unix)]
    let hup = match crate::reload::spawn_on_sighup(gw.state.unpinned(), path.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload needs a restart");
            None
        }
    };
    crate::http::server::termination_signal().await;
    #[cfg(unix)]
    if let Some(t) = hup {
        t.abort();
    }
    tracing::info!("signal received");
    gw.shutdown().await;
    ExitCode::SUCCESS
}
