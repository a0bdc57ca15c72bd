//! The only place errors become RFC 9457 `application/problem+json`
//! responses (DESIGN §5).
//!
//! Domain modules have their own `thiserror` enums; each converts into an
//! [`ApiError`] that carries a stable [`ProblemCode`], a human detail that
//! never contains personal data, and optional extension members (field paths,
//! an exchange id). Anything unexpected becomes a 500 `internal` with a
//! generic detail; its cause is logged once here, by type, never by value.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::audit::error::AuditRequestError;
use crate::audit::log::AppendError;
use crate::audit::query::QueryError;
use crate::auth::error::AuthError;
use crate::consent::model::Denial;
use crate::consent::verify::ConsentTokenError;
use crate::consent::ConsentError;
use crate::exchange::error::ExchangeError;
use crate::http::error::RequestError;
use crate::policy::FilterError;
use crate::schema::SchemaError;

/// The stable problem codes of DESIGN §5. `type` is `urn:samgate:problem:<code>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemCode {
    /// The body is not JSON.
    MalformedJson,
    /// The body is JSON but not the expected request shape.
    InvalidEnvelope,
    /// No (pinned) client certificate.
    Unauthenticated,
    /// A user JWT is missing, forged, expired or otherwise invalid.
    InvalidToken,
    /// A consent JWS has a bad signature or a disallowed algorithm.
    ConsentSignature,
    /// A consent JWS names an unknown issuer or key id.
    UnknownIssuer,
    /// The caller's party lacks the role.
    ForbiddenRole,
    /// No route allows this exchange.
    RouteNotAllowed,
    /// No consent for the subject.
    ConsentMissing,
    /// The consent was withdrawn.
    ConsentRevoked,
    /// The consent has expired (or is not yet valid).
    ConsentExpired,
    /// The consent does not cover the parties, purpose or categories.
    ConsentScope,
    /// Unknown resource.
    NotFound,
    /// A consent `jti` was already recorded.
    ConsentReplayed,
    /// An `Idempotency-Key` was reused with a different request.
    IdempotencyConflict,
    /// Body over the limit.
    PayloadTooLarge,
    /// Not `application/json`.
    UnsupportedMediaType,
    /// A personnummer failed validation.
    InvalidPersonnummer,
    /// The payload does not match its schema.
    SchemaViolation,
    /// A consent token's claims are invalid.
    InvalidConsentClaims,
    /// The recipient is not a configured party.
    UnknownParty,
    /// The message type is unknown.
    UnknownType,
    /// The party exceeded its rate limit.
    RateLimited,
    /// The recipient failed or timed out.
    RecipientFailed,
    /// Storage is unreachable; nothing was forwarded.
    Unavailable,
    /// The request body did not arrive within `[server] body_timeout`
    /// (DESIGN §10; 408, a code beyond §5's table).
    RequestTimeout,
    /// Unexpected server error (details only in the log).
    Internal,
}

impl ProblemCode {
    /// The code as it appears after `urn:samgate:problem:`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::MalformedJson => "malformed_json",
            ProblemCode::InvalidEnvelope => "invalid_envelope",
            ProblemCode::Unauthenticated => "unauthenticated",
            ProblemCode::InvalidToken => "invalid_token",
            ProblemCode::ConsentSignature => "consent_signature",
            ProblemCode::UnknownIssuer => "unknown_issuer",
            ProblemCode::ForbiddenRole => "forbidden_role",
            ProblemCode::RouteNotAllowed => "route_not_allowed",
            ProblemCode::ConsentMissing => "consent_missing",
            ProblemCode::ConsentRevoked => "consent_revoked",
            ProblemCode::ConsentExpired => "consent_expired",
            ProblemCode::ConsentScope => "consent_scope",
            ProblemCode::NotFound => "not_found",
            ProblemCode::ConsentReplayed => "consent_replayed",
            ProblemCode::IdempotencyConflict => "idempotency_conflict",
            ProblemCode::PayloadTooLarge => "payload_too_large",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::InvalidPersonnummer => "invalid_personnummer",
            ProblemCode::SchemaViolation => "schema_violation",
            ProblemCode::InvalidConsentClaims => "invalid_consent_claims",
            ProblemCode::UnknownParty => "unknown_party",
            ProblemCode::UnknownType => "unknown_type",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::RecipientFailed => "recipient_failed",
            ProblemCode::Unavailable => "unavailable",
            ProblemCode::RequestTimeout => "request_timeout",
            ProblemCode::Internal => "internal",
        }
    }

    /// The HTTP status of DESIGN §5's table.
    pub fn status(self) -> StatusCode {
        use ProblemCode::*;
        match self {
            MalformedJson | InvalidEnvelope => StatusCode::BAD_REQUEST,
            Unauthenticated | InvalidToken | ConsentSignature | UnknownIssuer => {
                StatusCode::UNAUTHORIZED
            }
            ForbiddenRole | RouteNotAllowed | ConsentMissing | ConsentRevoked | ConsentExpired
            | ConsentScope => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            ConsentReplayed | IdempotencyConflict => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidPersonnummer | SchemaViolation | InvalidConsentClaims | UnknownParty
            | UnknownType => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RecipientFailed => StatusCode::BAD_GATEWAY,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, fixed title.
    pub fn title(self) -> &'static str {
        use ProblemCode::*;
        match self {
            MalformedJson => "Malformed JSON",
            InvalidEnvelope => "Invalid request",
            Unauthenticated => "Unauthenticated",
            InvalidToken => "Invalid user token",
            ConsentSignature => "Invalid consent signature",
            UnknownIssuer => "Unknown consent issuer",
            ForbiddenRole => "Forbidden for this party's roles",
            RouteNotAllowed => "No route allows this exchange",
            ConsentMissing => "No consent for this participant",
            ConsentRevoked => "Consent withdrawn",
            ConsentExpired => "Consent expired",
            ConsentScope => "Outside the consent's scope",
            NotFound => "Not found",
            ConsentReplayed => "Consent already recorded",
            IdempotencyConflict => "Idempotency key reused with another request",
            PayloadTooLarge => "Payload too large",
            UnsupportedMediaType => "Unsupported media type",
            InvalidPersonnummer => "Invalid personnummer",
            SchemaViolation => "Payload does not match its schema",
            InvalidConsentClaims => "Invalid consent claims",
            UnknownParty => "Unknown party",
            UnknownType => "Unknown message type",
            RateLimited => "Rate limited",
            RecipientFailed => "Recipient failed",
            Unavailable => "Service unavailable",
            RequestTimeout => "Request timeout",
            Internal => "Internal error",
        }
    }
}

/// An error on the request path, ready to become a problem response.
#[derive(Debug)]
pub struct ApiError {
    /// The stable code.
    pub code: ProblemCode,
    /// Human-readable detail; never personal data.
    pub detail: String,
    /// Extension members (e.g. `errors`, `exchange_id`).
    pub extensions: Map<String, Value>,
    /// Extra response headers (e.g. `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and a detail. Private: every other module
    /// names its failure in its own enum, and the `From` impls below decide
    /// its code, status and detail.
    fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after: None,
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// An unexpected failure. `cause` is logged (by its Display, which must
    /// not contain personal data: our error types never carry any) and the
    /// client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error.cause = %cause, "internal error");
        Self::new(
            ProblemCode::Internal,
            "an internal error occurred; see the server log",
        )
    }

    /// Storage is down or timed out: 503, nothing forwarded.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error.cause = %cause, "storage unavailable");
        Self::new(
            ProblemCode::Unavailable,
            "storage is unavailable; nothing was forwarded, try again later",
        )
    }

    /// The problem document.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            Value::String(format!("urn:samgate:problem:{}", self.code.as_str())),
        );
        m.insert("title".into(), Value::String(self.code.title().into()));
        m.insert("status".into(), Value::from(self.code.status().as_u16()));
        m.insert("detail".into(), Value::String(self.detail.clone()));
        m.insert("code".into(), Value::String(self.code.as_str().into()));
        for (k, v) in &self.extensions {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut rsp = (self.code.status(), body).into_response();
        let headers = rsp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(http::header::RETRY_AFTER, v);
            }
        }
        rsp.extensions_mut().insert(ProblemMarker(self.code));
        rsp
    }
}

/// Attached to problem responses so the logging layer can record the code.
#[derive(Debug, Clone, Copy)]
pub struct ProblemMarker(pub ProblemCode);

/// Most failing pointers listed in a schema_violation problem.
const MAX_ERRORS: usize = 50;

/// Schema errors → 422 with the failing pointers (never values).
impl From<SchemaError> for ApiError {
    fn from(e: SchemaError) -> ApiError {
        match e {
            SchemaError::Violation { mut pointers } => {
                let total = pointers.len();
                let truncated = total > MAX_ERRORS;
                pointers.truncate(MAX_ERRORS);
                let mut e = ApiError::new(
                    ProblemCode::SchemaViolation,
                    format!("the payload does not match its schema at {total} place(s)"),
                )
                .with("errors", pointers);
                if truncated {
                    e = e.with("truncated", true);
                }
                e
            }
            other => ApiError::internal(other),
        }
    }
}

/// Filter errors → problems.
impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> ApiError {
        match e {
            FilterError::InvalidPersonnummer { pointer } => ApiError::new(
                ProblemCode::InvalidPersonnummer,
                format!("`{pointer}` is not a valid personnummer or samordningsnummer"),
            )
            .with("errors", vec![pointer]),
            FilterError::ConsentScope { uncovered } => ApiError::new(
                ProblemCode::ConsentScope,
                format!(
                "the consent does not cover the categories of the fields this route allows ({})",
                uncovered.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            ),
            ),
            FilterError::NotAnObject => ApiError::new(
                ProblemCode::SchemaViolation,
                "the payload must be a JSON object",
            )
            .with("errors", vec![String::new()]),
        }
    }
}

/// The problem code of a consent refusal (the exchange path and the
/// outbox's re-check both use it).
impl From<Denial> for ProblemCode {
    fn from(d: Denial) -> ProblemCode {
        match d {
            Denial::Missing => ProblemCode::ConsentMissing,
            Denial::Revoked => ProblemCode::ConsentRevoked,
            Denial::Expired => ProblemCode::ConsentExpired,
            Denial::Scope => ProblemCode::ConsentScope,
        }
    }
}

/// Consent refusals of the exchange path → 403 problems.
impl From<Denial> for ApiError {
    fn from(d: Denial) -> ApiError {
        ApiError::new(ProblemCode::from(d), d.to_string())
    }
}

/// Exchange refusals → problems (DESIGN §5): the code per variant, and the
/// failing pointer (`errors`) or the failed exchange's id where there is one.
impl From<ExchangeError> for ApiError {
    fn from(e: ExchangeError) -> ApiError {
        use ExchangeError as E;
        let code = match &e {
            E::InvalidSubject(_) | E::AnotherPerson(_) => ProblemCode::InvalidPersonnummer,
            E::UnknownParty(_) => ProblemCode::UnknownParty,
            E::UnknownType(_) => ProblemCode::UnknownType,
            E::SubjectRequiredBy(_) | E::SubjectRequired | E::BadIdempotencyKey => {
                ProblemCode::InvalidEnvelope
            }
            E::NoRoute { .. } => ProblemCode::RouteNotAllowed,
            E::RecipientFailed { .. } => ProblemCode::RecipientFailed,
            E::IdempotencyRace | E::IdempotencyReused | E::IdempotencyInProgress => {
                ProblemCode::IdempotencyConflict
            }
            E::NotFound => ProblemCode::NotFound,
            _ => return ApiError::internal(e),
        };
        let out = ApiError::new(code, e.to_string());
        match e {
            E::SubjectRequiredBy(p) | E::AnotherPerson(p) => out.with("errors", vec![p]),
            E::RecipientFailed { exchange_id, .. } => out.with("exchange_id", exchange_id),
            _ => out,
        }
    }
}

/// Authentication and role refusals → 401 / 403 problems.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        use AuthError as E;
        let code = match &e {
            E::NoCertificate | E::NotPinned => ProblemCode::Unauthenticated,
            E::Token(_) | E::AuditorWithoutUser => ProblemCode::InvalidToken,
            E::MissingRole { .. } | E::NoneOfRoles { .. } => ProblemCode::ForbiddenRole,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Refusals of the HTTP layer → problems: the failing path of a badly
/// shaped body (`errors`), the rate limit's `Retry-After`.
impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        use RequestError as E;
        let code = match &e {
            E::NotJson => ProblemCode::UnsupportedMediaType,
            E::TooLarge { .. } => ProblemCode::PayloadTooLarge,
            E::BodyTimeout => ProblemCode::RequestTimeout,
            E::MalformedJson { .. } => ProblemCode::MalformedJson,
            E::Shape { .. } | E::AmbiguousFraming => ProblemCode::InvalidEnvelope,
            E::RateLimited { .. } => ProblemCode::RateLimited,
            E::CrossSite => ProblemCode::ForbiddenRole,
            E::NoSuchResource => ProblemCode::NotFound,
            E::DatabaseUnreachable => ProblemCode::Unavailable,
        };
        let mut out = ApiError::new(code, e.to_string());
        match e {
            E::Shape { path, .. } => out = out.with("errors", vec![Value::String(path)]),
            E::RateLimited { retry_after, .. } => out.retry_after = Some(retry_after),
            _ => {}
        }
        out
    }
}

/// Consent token refusals → 401 / 422 problems, in the order of the checks.
impl From<ConsentTokenError> for ApiError {
    fn from(e: ConsentTokenError) -> ApiError {
        use ConsentTokenError as E;
        let code = match &e {
            E::Signature(_) => ProblemCode::ConsentSignature,
            E::UnknownIssuer => ProblemCode::UnknownIssuer,
            E::Subject(_) => ProblemCode::InvalidPersonnummer,
            E::Claims(_) => ProblemCode::InvalidConsentClaims,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Consent requests refused → problems.
impl From<ConsentError> for ApiError {
    fn from(e: ConsentError) -> ApiError {
        let code = match e {
            ConsentError::Replayed => ProblemCode::ConsentReplayed,
            ConsentError::NotFound => ProblemCode::NotFound,
            ConsentError::Changed => ProblemCode::Unavailable,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Refused audit requests → 400, 404 or (a bad personnummer) 422 problems.
impl From<AuditRequestError> for ApiError {
    fn from(e: AuditRequestError) -> ApiError {
        use AuditRequestError as E;
        let code = match &e {
            E::Personnummer(_) => ProblemCode::InvalidPersonnummer,
            E::NoRecord { .. } | E::NoTree { .. } => ProblemCode::NotFound,
            _ => ProblemCode::InvalidEnvelope,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Audit reads that failed: storage (503 or 500), or a damaged database.
impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Db(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

/// An audit append that did not commit: storage down (503) or a bug (500).
impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Unavailable(_) => ApiError::unavailable(e),
            other => ApiError::internal(other),
        }
    }
}

/// Storage errors on the request path: pool timeouts and I/O mean the
/// database is unreachable (503); anything else is internal.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if storage_down(&e) {
            ApiError::unavailable(e)
        } else {
            ApiError::internal(e)
        }
    }
}

/// True for errors that mean the database is unreachable or busy rather
/// than a bug: pool timeouts, I/O, a closed pool, SQLite BUSY/LOCKED
/// (codes 5 and 6, with their extended codes) and PostgreSQL's connection
/// and shutdown classes (08xxx, 57P0x).
pub fn storage_down(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            let c = c.as_ref();
            c.starts_with("08")
                || c.starts_with("57P0")
                || c.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
        }),
        _ => false,
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// A client-supplied name for an error detail, quoted back only when it
/// looks like an id (lowercase letters, digits, `-`, at most four digits, as
/// [`crate::http::error::shown_key`]: a personnummer has ten); anything else
/// could be personal data and is shown as `(not shown)`.
pub fn quote_id(s: &str) -> String {
    let id_like = !s.is_empty()
        && s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && crate::http::error::shown_key(s) == s;
    if id_like {
        format!("`{s}`")
    } else {
        "(not shown)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::verify::{ClaimsError, SignatureError};
    use crate::party::{PartyId, Role};

    fn problem(e: impl Into<ApiError>) -> (u16, &'static str, String) {
        let e = e.into();
        (e.code.status().as_u16(), e.code.as_str(), e.detail)
    }

    fn is(e: impl Into<ApiError>, status: u16, code: &str, detail: &str) {
        assert_eq!(problem(e), (status, code, detail.to_owned()));
    }

    /// The texts each enum formats are the ones the handlers built by hand
    /// before the enums existed (clients and tests match on them).
    #[test]
    fn auth_details_are_unchanged() {
        let party = || PartyId::new("af");
        is(
            AuthError::MissingRole {
                party: party(),
                role: Role::Intake,
            },
            403,
            "forbidden_role",
            "party `af` does not have the `intake` role",
        );
        is(
            AuthError::NoneOfRoles {
                party: party(),
                roles: vec![Role::Agency, Role::Auditor],
            },
            403,
            "forbidden_role",
            "party `af` needs one of the roles agency, auditor",
        );
        is(
            AuthError::Token(crate::auth::jwt::JwtError::Expired),
            401,
            "invalid_token",
            "the user token has expired",
        );
    }

    /// The same for the HTTP layer's refusals.
    #[test]
    fn request_details_are_unchanged() {
        is(
            RequestError::Shape {
                path: ".".into(),
                what: "missing field `to`".into(),
            },
            400,
            "invalid_envelope",
            "the body: missing field `to`",
        );
        is(
            RequestError::Shape {
                path: "payload.x".into(),
                what: "has the wrong type or value".into(),
            },
            400,
            "invalid_envelope",
            "`payload.x`: has the wrong type or value",
        );
        is(
            RequestError::TooLarge { limit: 10 },
            413,
            "payload_too_large",
            "the request body exceeds the limit of 10 bytes",
        );
        is(
            RequestError::MalformedJson { line: 1, column: 2 },
            400,
            "malformed_json",
            "the body is not valid JSON (line 1, column 2)",
        );
    }

    /// The same for audit queries and consents.
    #[test]
    fn audit_and_consent_details_are_unchanged() {
        is(
            AuditRequestError::Limit,
            400,
            "invalid_envelope",
            "`limit` must be between 1 and 1000",
        );
        is(
            AuditRequestError::NoRecord {
                seq: 3,
                size: 2,
                current: 2,
            },
            404,
            "not_found",
            "no record 3 in a tree of size 2 (the log has 2 records)",
        );
        is(
            ConsentTokenError::from(ClaimsError::Lifetime(365)),
            422,
            "invalid_consent_claims",
            "the consent's lifetime exceeds the maximum of 365 days",
        );
        is(
            ConsentTokenError::from(SignatureError::Invalid),
            401,
            "consent_signature",
            "the consent's signature does not verify",
        );
        is(
            ConsentError::Changed,
            503,
            "unavailable",
            "the participant's consent changed while the exchange was decided; nothing was sent, try again",
        );
    }

    /// The extension members and headers some refusals carry.
    #[test]
    fn extensions_survive_the_mapping() {
        let e = ApiError::from(RequestError::Shape {
            path: "to".into(),
            what: "has the wrong type or value".into(),
        });
        assert_eq!(e.extensions["errors"], serde_json::json!(["to"]));
        let e = ApiError::from(RequestError::RateLimited {
            per_second: 5,
            retry_after: 2,
        });
        assert_eq!(e.detail, "rate limit of 5 requests/s exceeded");
        assert_eq!(e.retry_after, Some(2));
        assert_eq!(e.code.status().as_u16(), 429);
    }
}
