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
pub mod init;
pub mod keys;
pub mod observe;
pub mod party;
pub mod pki;
pub mod policy;
pub mod reload;
pub mod rotate;
pub mod schema;
pub mod state;
pub mod store;
pub mod subject;
pub mod telemetry;
pub mod tls;
pub mod witness;

// shim: remove after the parallel branches merge (the modules moved to
// `crate::subject` and `crate::http`).
pub mod personnummer {
    //! Moved to [`crate::subject::personnummer`].
    pub use crate::subject::personnummer::*;
}
// shim: remove after the parallel branches merge.
pub mod pseudonym {
    //! Moved to [`crate::subject::pseudonym`].
    pub use crate::subject::pseudonym::*;
}
// shim: remove after the parallel branches merge.
pub mod vault {
    //! Moved to [`crate::subject::vault`].
    pub use crate::subject::vault::*;
}
// shim: remove after the parallel branches merge.
pub mod server {
    //! Moved to [`crate::http::server`].
    pub use crate::http::server::*;
}
// shim: remove after the parallel branches merge.
pub mod framing {
    //! Moved to [`crate::http::framing`].
    pub use crate::http::framing::*;
}
