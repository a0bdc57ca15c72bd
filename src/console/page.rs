//! The page frame (header, navigation, main landmark), the start page, the
//! embedded assets and the error page.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::{viewer, PageError, Viewer};
use crate::auth::Principal;
use crate::party::Role;
use crate::state::AppState;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const RECORD_JS: &str = include_str!("assets/record.js");

/// Headers of an HTML page.
pub(crate) fn html_headers() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "text/html; charset=utf-8")]
}

/// An HTML page response.
pub(crate) fn respond(markup: Markup) -> Response {
    (html_headers(), markup.into_string()).into_response()
}

/// An HTML page in the frame, answered with `status`.
pub(crate) fn respond_page(
    status: StatusCode,
    title: &str,
    viewer: Option<&Viewer>,
    body: Markup,
) -> Response {
    let mut rsp = respond(layout(title, viewer, body));
    *rsp.status_mut() = status;
    rsp
}

/// The frame of every console page. `title` never holds personal data.
pub(crate) fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="sv" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – samgate" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Hoppa till innehållet" }
                header class="top" {
                    p class="brand" { a href="/console/" { "samgate" } " · konsolen" }
                    @if let Some(v) = viewer {
                        nav aria-label="Huvudmeny" {
                            ul {
                                li { a href="/console/" { "Start" } }
                                @if v.has(Role::Intake) {
                                    li { a href="/console/intake" { "Intag" } }
                                }
                                @if v.has(Role::Auditor) {
                                    li { a href="/console/audit" { "Granskning" } }
                                    li { a href="/console/audit/tree-heads" { "Trädhuvuden" } }
                                    li { a href="/console/audit/subject-search" { "Sök deltagare" } }
                                }
                            }
                        }
                        p class="who" { "Inloggad: " strong { (v.user.name) } ", " (v.party_name) }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A form's hidden CSRF field.
pub(crate) fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// An error box (role `alert`) listing messages.
pub(crate) fn errors(messages: &[String]) -> Markup {
    html! {
        @if !messages.is_empty() {
            div class="error" role="alert" id="form-errors" {
                h2 { "Det gick inte att spara" }
                ul { @for m in messages { li { (m) } } }
            }
        }
    }
}

/// A standalone error page.
pub(crate) fn error_page(title: &str, message: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            div class="error" role="alert" { p { (message) } }
            p { a href="/console/" { "Till konsolens startsida" } }
        },
    )
}

/// `GET /console/`: who is signed in and what they may do.
pub(crate) async fn home(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, PageError> {
    let v = viewer(&state, principal)?;
    let body = html! {
        p { "Välkommen, " (v.user.name) ". Du är inloggad med ditt personliga certifikat för " (v.party_name) "." }
        div class="cards" {
            @if v.has(Role::Intake) {
                section class="card" aria-labelledby="card-intake" {
                    h2 id="card-intake" { "Intag" }
                    p { "Registrera en deltagares samtycke, sök och återkalla samtycken, skriv ut kvitto och registerutdrag." }
                    p { a href="/console/intake" { "Till intaget" } }
                }
            }
            @if v.has(Role::Auditor) {
                section class="card" aria-labelledby="card-audit" {
                    h2 id="card-audit" { "Granskning" }
                    p { "Läs loggen, kontrollera poster i webbläsaren, se trädhuvuden och ladda ner en export." }
                    p { a href="/console/audit" { "Till granskningen" } }
                }
            }
        }
    };
    Ok(respond(layout("Konsolen", Some(&v), body)))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The stylesheet.
pub(crate) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// The page script (print buttons, confirmations).
pub(crate) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// The record page's verifier.
pub(crate) async fn record_js() -> Response {
    asset("text/javascript; charset=utf-8", RECORD_JS)
}

/// Unknown console path.
pub(crate) async fn not_found() -> PageError {
    PageError::new(
        axum::http::StatusCode::NOT_FOUND,
        "Sidan finns inte",
        "Sidan finns inte.",
    )
}
