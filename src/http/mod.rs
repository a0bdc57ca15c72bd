//! The HTTP surface: the router (every route in one place) and the layers
//! that wrap it (`router`), the extractors (`extract`), their refusals (`error`), the meta endpoints
//! (`meta`), the per-party rate limit (`ratelimit`), serving over mTLS (`server`) and the framing check (`framing`).

pub mod error;
pub mod extract;
pub mod framing;
pub mod meta;
pub mod ratelimit;
pub mod router;
pub mod server;
