//! The browser console (DESIGN §11): intake staff record, find and revoke
//! consents and print receipts and register extracts; auditors read and
//! verify the log. Served under `/console/` on the mTLS listener, in
//! Swedish, rendered on the server (maud templates compiled into the
//! binary), with embedded CSS and JS and no inline script.
//!
//! People sign in with a personal client certificate (`[[user]]`), which the
//! ordinary authentication layer turns into a principal (party, roles,
//! user). Every action calls the same handler as the API route it mirrors
//! (`POST /v1/consents`, `/revocation`, `/v1/disclosures`,
//! `/v1/audit/records`, `/subject-search`, `/export`), so it is checked and
//! audited exactly as the API is.
//!
//! Forms carry a CSRF token: `base64url(nonce ‖ issued-at ‖ HMAC)`, the HMAC
//! (SHA-256, key derived from the console signing key, or random per
//! process without one) over the user id, the nonce and the time; valid for
//! [`keys::CSRF_TTL_SECS`] and only for the user it was issued to. No session or
//! cookie is needed. Requests whose `Sec-Fetch-Site` says `cross-site` are
//! refused too.

mod audit;
mod intake;
pub mod keys;
pub mod labels;
mod page;
mod receipt;

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::Principal;
use crate::config::UserConfig;
use crate::party::Role;
use crate::state::AppState;

/// The console's routes, nested under `/console` by [`crate::http::router`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::permanent("/console/") }))
        .route("/assets/console.css", get(page::css))
        .route("/assets/console.js", get(page::js))
        .route("/assets/record.js", get(page::record_js))
        .route("/intake", get(intake::form))
        .route("/intake/consents", post(intake::record))
        .route("/intake/consents/{id}", get(intake::show))
        .route("/intake/consents/{id}/revocation", post(intake::revoke))
        .route("/intake/consents/{id}/receipt", get(intake::receipt))
        .route("/intake/search", post(intake::search))
        .route("/intake/extract", post(intake::extract))
        .route("/audit", get(audit::records))
        .route("/audit/records/{seq}", get(audit::record))
        .route("/audit/tree-heads", get(audit::tree_heads))
        .route("/audit/subject-search", get(audit::search_form))
        .route("/audit/subject-search", post(audit::search))
        .route("/audit/export", get(audit::export))
        .fallback(page::not_found)
        .layer(middleware::from_fn(security_headers))
}

/// `GET /console/`, the start page. (A nested `/` is `/console` without the
/// slash, so the router adds this route next to the nest.)
pub fn home_route() -> axum::routing::MethodRouter<AppState> {
    get(page::home).layer(middleware::from_fn(security_headers))
}

/// CSP `default-src 'self'` (no inline script or style), no framing, no
/// referrer, no caching of pages (they hold personal data).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut rsp = next.run(req).await;
    let h = rsp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    if !h.contains_key("cache-control") {
        set(h, "cache-control", "no-store");
    }
    rsp
}

/// The signed-in person: their principal and `[[user]]` entry.
pub(crate) struct Viewer {
    pub principal: Principal,
    pub user: UserConfig,
    pub party_name: String,
}

impl Viewer {
    fn has(&self, role: Role) -> bool {
        self.principal.has(role)
    }
}

/// A console error page: a status and a Swedish message, never a trace.
pub(crate) struct PageError {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Åtkomst nekad", message)
    }

    pub(crate) fn from_api(e: &crate::error::ApiError) -> Self {
        Self::new(
            e.code.status(),
            "Något gick fel",
            labels::problem(e.code.as_str()),
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = page::error_page(self.title, &self.message);
        (self.status, page::html_headers(), body.into_string()).into_response()
    }
}

/// The viewer of a request: a personal user certificate is required.
pub(crate) fn viewer(state: &AppState, principal: Principal) -> Result<Viewer, PageError> {
    let user = principal
        .user
        .as_deref()
        .and_then(|id| state.live().config.user(id))
        // Only the user's own party can present them: a party's user token
        // naming another party's person does not sign in as that person.
        .filter(|u| u.party == principal.party && u.roles.is_subset(&principal.roles))
        .cloned()
        .ok_or_else(|| {
            PageError::forbidden(
                "Konsolen kräver ett personligt certifikat (e-tjänstekort). Organisationens \
                 systemcertifikat ger inte tillgång till konsolen.",
            )
        })?;
    let party_name = state
        .live()
        .config
        .party(user.party.as_str())
        .map_or_else(|| user.party.to_string(), |p| p.name.clone());
    Ok(Viewer {
        principal,
        user,
        party_name,
    })
}

/// The viewer, who must hold `role` (403 page otherwise).
fn viewer_with(state: &AppState, principal: Principal, role: Role) -> Result<Viewer, PageError> {
    let v = viewer(state, principal)?;
    if !v.has(role) {
        let what = match role {
            Role::Intake => "intagets sidor (rollen intag)",
            Role::Auditor => "granskningens sidor (rollen granskare)",
            Role::Agency => "den här sidan",
        };
        return Err(PageError::forbidden(format!(
            "Ditt certifikat ger inte behörighet till {what}."
        )));
    }
    Ok(v)
}

/// Refuses a form post without a valid CSRF token for this user, or one
/// that a browser marks as cross-site.
pub(crate) fn check_csrf(
    state: &AppState,
    viewer: &Viewer,
    headers: &axum::http::HeaderMap,
    token: Option<&str>,
) -> Result<(), PageError> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let now = state.clock.now().unix_timestamp();
    let ok = token.is_some_and(|t| state.console.csrf_ok(&viewer.user.id, t, now));
    if cross_site || !ok {
        return Err(PageError::forbidden(
            "Formuläret har gått ut eller kom inte från konsolen. Ladda om sidan och försök igen.",
        ));
    }
    Ok(())
}

/// The role a group of pages needs: the type parameter of [`Staff`] and
/// [`Posted`].
pub(crate) trait PageRole {
    const ROLE: Role;
}

/// The intake pages' role.
pub(crate) struct AsIntake;

impl PageRole for AsIntake {
    const ROLE: Role = Role::Intake;
}

/// The audit pages' role.
pub(crate) struct AsAuditor;

impl PageRole for AsAuditor {
    const ROLE: Role = Role::Auditor;
}

/// Extractor: the viewer of a page, who must hold `R`'s role (a 403 page
/// otherwise, see [`viewer_with`]).
pub(crate) struct Staff<R>(pub Viewer, PhantomData<R>);

impl<R: PageRole> FromRequestParts<AppState> for Staff<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let principal = Principal::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let v = viewer_with(state, principal, R::ROLE).map_err(IntoResponse::into_response)?;
        Ok(Staff(v, PhantomData))
    }
}

/// Extractor (the body, so the last argument): a form post of a viewer
/// holding `R`'s role, and the form's pairs, once its CSRF token is checked.
pub(crate) struct Posted<R>(pub Viewer, pub Vec<(String, String)>, PhantomData<R>);

impl<R: PageRole> FromRequest<AppState> for Posted<R> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Staff(viewer, _) = Staff::<R>::from_request_parts(&mut parts, state).await?;
        let pairs = read_form(body).await.map_err(IntoResponse::into_response)?;
        check_csrf(state, &viewer, &parts.headers, first(&pairs, "csrf"))
            .map_err(IntoResponse::into_response)?;
        Ok(Posted(viewer, pairs, PhantomData))
    }
}

/// The JSON body an API handler expects, made from `value` as if it had
/// arrived (the same parsing and shape check). The serialised bytes are
/// kept only with `keep_raw` (a handler that hashes them); otherwise they
/// are dropped here, with any personnummer they hold.
pub(crate) fn api_body<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    keep_raw: bool,
) -> Result<crate::http::extract::JsonBody<T>, PageError> {
    let raw = serde_json::to_vec(&value).map_err(|_| internal())?;
    drop(value);
    let parsed = crate::http::extract::parse_json(&raw)
        .map_err(|e| PageError::from_api(&crate::error::ApiError::from(e)))?;
    Ok(crate::http::extract::JsonBody {
        value: parsed,
        raw: if keep_raw {
            axum::body::Bytes::from(raw)
        } else {
            axum::body::Bytes::new()
        },
    })
}

/// A fresh CSRF token for the viewer.
pub(crate) fn csrf(state: &AppState, viewer: &Viewer) -> String {
    state
        .console
        .csrf_token(&viewer.user.id, state.clock.now().unix_timestamp())
}

/// Reads an API handler's JSON answer.
pub(crate) async fn json_of(rsp: Response) -> Result<serde_json::Value, PageError> {
    let bytes = axum::body::to_bytes(rsp.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|_| internal())?;
    serde_json::from_slice(&bytes).map_err(|_| internal())
}

pub(crate) fn internal() -> PageError {
    PageError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Något gick fel",
        labels::problem("internal"),
    )
}

/// Parses an `application/x-www-form-urlencoded` body into pairs (repeated
/// keys kept, for checkboxes).
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `key`.
pub(crate) fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every value of `key`.
pub(crate) fn all<'a>(pairs: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads a form body (at most 64 KiB).
pub(crate) async fn read_form(body: axum::body::Body) -> Result<Vec<(String, String)>, PageError> {
    let raw = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| {
        PageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Formuläret är för stort",
            labels::problem("payload_too_large"),
        )
    })?;
    Ok(form_pairs(&raw))
}

/// A party's display name (the id when unknown).
pub(crate) fn party_name(state: &AppState, id: &str) -> String {
    state
        .live()
        .config
        .party(id)
        .map_or_else(|| id.to_owned(), |p| p.name.clone())
}

/// A user's display name (the id when unknown).
pub(crate) fn user_name(state: &AppState, id: &str) -> String {
    state
        .live()
        .config
        .user(id)
        .map_or_else(|| id.to_owned(), |u| u.name.clone())
}

/// The array at `key` of an API answer (empty when there is none).
pub(crate) fn array_at(answer: &serde_json::Value, key: &str) -> Vec<serde_json::Value> {
    answer
        .get(key)
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The strings of a JSON array (empty when it is not one).
pub(crate) fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM` (UTC) for pages.
pub(crate) fn when(rfc3339: &str) -> String {
    match time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        Err(_) => rfc3339.to_owned(),
    }
}

/// An RFC 3339 time as a date `YYYY-MM-DD`.
pub(crate) fn date_of(rfc3339: &str) -> String {
    when(rfc3339).chars().take(10).collect()
}
