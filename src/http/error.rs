//! Why the HTTP layer refuses a request before a handler decides anything:
//! the body (type, size, arrival, JSON, shape), the framing, the rate limit,
//! a cross-site browser request, an unknown path, an unreachable database
//! on `/readyz`. Each becomes problem+json in [`crate::error`]; no text here
//! holds a value from the request.

/// A refusal of the HTTP layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not `application/json` (415).
    #[error("the request body must be application/json")]
    NotJson,
    /// The body exceeds `[server] max_body_bytes` (413).
    #[error("the request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive within `[server] body_timeout` (408).
    #[error("the request body did not arrive within the body timeout")]
    BodyTimeout,
    /// The body is not JSON (400 `malformed_json`).
    #[error("the body is not valid JSON (line {line}, column {column})")]
    MalformedJson {
        /// serde_json's line.
        line: usize,
        /// serde_json's column.
        column: usize,
    },
    /// The body is JSON of the wrong shape at `path` (400
    /// `invalid_envelope`, with `errors: [path]`); `what` names keys only.
    #[error("{}: {what}", place(.path))]
    Shape {
        /// The serde path (`.` for the body itself).
        path: String,
        /// What is wrong there, never the value.
        what: String,
    },
    /// Ambiguous framing, a request-smuggling shape (400).
    #[error(
        "ambiguous message framing (Content-Length with Transfer-Encoding, or conflicting lengths)"
    )]
    AmbiguousFraming,
    /// The party's token bucket is empty (429 with `Retry-After`).
    #[error("rate limit of {per_second} requests/s exceeded")]
    RateLimited {
        /// The configured rate.
        per_second: u32,
        /// Seconds until a request is allowed again.
        retry_after: u64,
    },
    /// A browser request made by another site (403 `forbidden_role`).
    #[error("requests made by another site are refused")]
    CrossSite,
    /// No route matches (404).
    #[error("no such resource")]
    NoSuchResource,
    /// `/readyz` could not reach the database (503).
    #[error("the database is unreachable")]
    DatabaseUnreachable,
}

fn place(path: &str) -> String {
    if path == "." {
        "the body".to_owned()
    } else {
        format!("`{path}`")
    }
}
