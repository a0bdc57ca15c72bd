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
//! [`CSRF_TTL_SECS`] and only for the user it was issued to. No session or
//! cookie is needed. Requests whose `Sec-Fetch-Site` says `cross-site` are
//! refused too.

mod audit;
mod intake;
pub mod labels;
mod page;
mod receipt;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

use crate::auth::Principal;
use crate::config::{Config, Role, UserConfig};
use crate::consent::token::SigningKeyFile;
use crate::state::AppState;

/// How long a form's CSRF token is accepted.
pub const CSRF_TTL_SECS: i64 = 4 * 3600;

/// The console's keys, built at start.
pub struct ConsoleState {
    signer: Option<(SigningKeyFile, String)>,
    csrf: hmac::Key,
}

impl ConsoleState {
    /// Loads `[console] signing_key` (if configured) and derives the CSRF key.
    pub fn load(config: &Config) -> Result<Self, String> {
        let Some(c) = &config.console else {
            let rng = ring::rand::SystemRandom::new();
            let csrf = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
                .map_err(|_| "system random number generator failed".to_owned())?;
            return Ok(Self { signer: None, csrf });
        };
        let signer = SigningKeyFile::load(&c.signing_key).map_err(|e| e.to_string())?;
        let pem_bytes = std::fs::read(&c.signing_key).map_err(|e| e.to_string())?;
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]);
        let prk = salt.extract(&pem_bytes);
        let info: &[&[u8]] = &[b"samgate/console/csrf/v1"];
        let okm = prk
            .expand(info, hmac::HMAC_SHA256)
            .map_err(|_| "key derivation failed".to_owned())?;
        let csrf = hmac::Key::from(okm);
        Ok(Self {
            signer: Some((signer, c.key_id.clone())),
            csrf,
        })
    }

    /// The console's consent signer and its `kid`, when configured.
    pub(crate) fn signer(&self) -> Option<(&SigningKeyFile, &str)> {
        self.signer.as_ref().map(|(s, k)| (s, k.as_str()))
    }

    fn mac(&self, user: &str, nonce: &[u8], at: i64) -> hmac::Tag {
        let mut msg = Vec::with_capacity(user.len() + nonce.len() + 9);
        msg.extend_from_slice(user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(nonce);
        msg.extend_from_slice(&at.to_be_bytes());
        hmac::sign(&self.csrf, &msg)
    }

    /// A fresh CSRF token for `user` at unix time `now`.
    pub(crate) fn csrf_token(&self, user: &str, now: i64) -> String {
        let nonce = uuid::Uuid::new_v4();
        let mut raw = nonce.as_bytes().to_vec();
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(self.mac(user, nonce.as_bytes(), now).as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `token` was issued to `user` within the last [`CSRF_TTL_SECS`].
    pub(crate) fn csrf_ok(&self, user: &str, token: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        let (Some(nonce), Some(at), Some(tag)) = (raw.get(..16), raw.get(16..24), raw.get(24..))
        else {
            return false;
        };
        let Ok(at_bytes) = <[u8; 8]>::try_from(at) else {
            return false;
        };
        let at = i64::from_be_bytes(at_bytes);
        if at > now + 60 || now - at > CSRF_TTL_SECS {
            return false;
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(nonce);
        msg.extend_from_slice(&at.to_be_bytes());
        hmac::verify(&self.csrf, &msg, tag).is_ok()
    }
}

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
pub(crate) fn viewer_with(
    state: &AppState,
    principal: Principal,
    role: Role,
) -> Result<Viewer, PageError> {
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

/// A form post of a viewer holding `role`: the viewer and the form's pairs,
/// once its CSRF token is checked.
pub(crate) async fn posted_form(
    state: &AppState,
    principal: Principal,
    role: Role,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<(Viewer, Vec<(String, String)>), PageError> {
    let v = viewer_with(state, principal, role)?;
    let pairs = read_form(body).await?;
    check_csrf(state, &v, headers, first(&pairs, "csrf"))?;
    Ok((v, pairs))
}

/// The JSON body an API handler expects, made from `value` as if it had
/// arrived (the same parsing and shape check). The serialised bytes are
/// kept only with `keep_raw` (a handler that hashes them); otherwise they
/// are dropped here, with any personnummer they hold.
pub(crate) fn api_body<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    keep_raw: bool,
) -> Result<crate::http::JsonBody<T>, PageError> {
    let raw = serde_json::to_vec(&value).map_err(|_| internal())?;
    drop(value);
    let parsed = crate::http::parse_json(&raw).map_err(|e| PageError::from_api(&e))?;
    Ok(crate::http::JsonBody {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ConsoleState {
        let rng = ring::rand::SystemRandom::new();
        ConsoleState {
            signer: None,
            csrf: hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap(),
        }
    }

    #[test]
    fn csrf_token_is_bound_to_user_and_time() {
        let s = state();
        let t = s.csrf_token("anna.lind", 1_000_000);
        assert!(s.csrf_ok("anna.lind", &t, 1_000_010));
        assert!(!s.csrf_ok("erik.berg", &t, 1_000_010), "another user");
        assert!(
            !s.csrf_ok("anna.lind", &t, 1_000_000 + CSRF_TTL_SECS + 1),
            "expired"
        );
        assert!(!s.csrf_ok("anna.lind", &t, 999_000), "from the future");
        let mut forged = t.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(!s.csrf_ok(
            "anna.lind",
            std::str::from_utf8(&forged).unwrap(),
            1_000_010
        ));
        assert!(!s.csrf_ok("anna.lind", "", 1_000_010));
        assert!(!s.csrf_ok("anna.lind", "!!!", 1_000_010));
        let other = state();
        assert!(!other.csrf_ok("anna.lind", &t, 1_000_010), "another key");
    }
}
