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

pub use extract::{
    check_json_content_type, parse_json, read_body, JsonBody, RequestId, REQUEST_ID,
};
pub use meta::metrics_handle;
pub use router::{created, forbidden, ops_router, router, PartyRateLimiter};
