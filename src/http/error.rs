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

/// How an error names a key or a path segment the client chose (an unknown
/// field, a payload property, an array index): as it is when it looks like a
/// field name (at most 64 of `A-Z a-z 0-9 _ -`, at most four digits), else
/// `(not shown)`. A key can be anything, also a personnummer, and no problem
/// answer may hold one (DESIGN §5); no field name of the contract has more
/// than four digits, and a personnummer has ten.
pub fn shown_key(key: &str) -> &str {
    let field_like = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && key.chars().filter(char::is_ascii_digit).count() <= 4;
    if field_like {
        key
    } else {
        "(not shown)"
    }
}

/// serde_path_to_error's path (`a.b[0].c`) with every key the client could
/// have chosen passed through [`shown_key`].
pub fn shown_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(shown_key(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shown_key;

    #[test]
    fn keys_that_could_hold_a_personnummer_are_not_shown() {
        for key in ["goal", "sub_goals", "plan-version", "12", "x2026"] {
            assert_eq!(shown_key(key), key);
        }
        for key in [
            "200203149828",
            "020314-9828",
            "a20020314x9828",
            "",
            "two words",
            "a.b",
            &"k".repeat(65),
        ] {
            assert_eq!(shown_key(key), "(not shown)", "{key}");
        }
    }
}
