//! Why the gateway could not start: the one error of building the state and
//! binding the listeners (exit code 2 for configuration problems).

use crate::store::StoreError;

/// Why the gateway could not start (exit code 2 for config problems).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A key or certificate file is unusable.
    #[error("{key}: {reason}")]
    Key {
        /// Config key.
        key: String,
        /// Reason.
        reason: String,
    },
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}
