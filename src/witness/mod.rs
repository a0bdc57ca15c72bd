//! Witnesses (DESIGN §12): a log that no single operator can rewrite.
//!
//! Each agency that takes part runs a witness (`samgate witness serve`): a small HTTPS
//! service speaking C2SP `tlog-witness`. The gateway sends it every new checkpoint with a
//! consistency proof from the last one it cosigned; the witness checks the gateway's
//! signature and the proof, records the new size and root, and answers with a C2SP
//! `tlog-cosignature`. A witness never cosigns two different trees of one size, nor a tree
//! that does not extend the one it saw, so a log rewritten after a checkpoint was cosigned
//! cannot collect cosignatures again.
//!
//! - [`config`]: the witness's own configuration file.
//! - [`store`]: its SQLite store (latest checkpoint per log, refused checkpoints).
//! - [`protocol`]: `add-checkpoint` parsing and checking.
//! - [`server`]: the mTLS listener.
//! - [`init`]: `samgate witness init`.
//! - [`client`]: the gateway side: submission with retries, cosignature storage, metrics.
//! - [`cli`]: the `samgate witness` commands.

pub mod cli;
pub mod client;
pub mod config;
pub mod init;
pub mod protocol;
pub mod server;
pub mod store;
