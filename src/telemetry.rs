//! Logging set-up: `RUST_LOG`-style filtering (default `info`), text or JSON.
//! Personal data is never logged anywhere in samgate: only ids, codes and
//! pseudonyms reach a log line.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(json: bool) {
    init_with_default(json, "info");
}

/// [`init`] with another default filter when `RUST_LOG` is unset: the demo
/// uses `warn`, so that its own output on stdout is not interleaved with
/// request logs (logs always go to stderr).
pub fn init_with_default(json: bool, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
