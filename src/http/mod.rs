//! The HTTP surface: the router (every route in one place) and the layers
//! that wrap it (`router`), the extractors (`extract`), the meta endpoints
//! (`meta`), serving over mTLS (`server`) and the framing check (`framing`).
//!
//! The names that used to live in the flat `http.rs` are re-exported here,
//! so `crate::http::{JsonBody, RequestId, router, ...}` keep working.

pub mod extract;
pub mod framing;
pub mod meta;
pub mod router;
pub mod server;

// Globs, so that a `pub` item added to one of these files by a parallel
// branch is reachable at `crate::http::` as before the split.
pub use extract::*;
pub use meta::*;
pub use router::*;
