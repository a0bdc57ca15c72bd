//! samgate: a consent-aware data exchange gateway for Swedish rehabilitation
//! cooperation (samverkan). `docs/design.md` is the contract ("DESIGN §n" in
//! comments means its section n); `docs/architecture.md` shows how the
//! modules fit together.
//!
//! The library holds everything; `src/main.rs` only parses the command line.
//! `serve`, `demo` and the tests all start the same [`http::server::Gateway`] from a
//! [`state::AppState`] built from a validated [`config::Config`].

pub mod audit;
pub mod auth;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connguard;
pub mod consent;
pub mod console;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod exchange;
pub mod http;
pub mod ids;
pub mod init;
pub mod keys;
pub mod observe;
pub mod party;
pub mod pki;
pub mod policy;
pub mod reload;
pub mod rotate;
pub mod schema;
pub mod startup;
pub mod state;
pub mod store;
pub mod subject;
pub mod telemetry;
pub mod tls;
pub mod witness;
