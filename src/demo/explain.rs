//! Turning wire data into sentences: how the subject travelled (a masked
//! personnummer, a pseudonym, or nothing), which fields a recipient got,
//! and why the gateway withheld the others, derived from the route table
//! and the schemas the gateway itself uses.

use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::policy::route::RouteConfig;
use crate::policy::SubjectMode;
use crate::schema::{Category, SchemaRegistry};
use crate::subject::personnummer::Personnummer;

/// How an identifier value appears to a reader: `personnummer
/// YYYYMMDD-****`, `pseudonym ps1_abcdefgh…`, or `omitted`.
pub fn identifier(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "omitted".to_owned(),
        Some(Value::Object(o)) => {
            if let Some(p) = o.get("personnummer") {
                identifier(Some(p))
            } else if let Some(p) = o.get("pseudonym") {
                identifier(Some(p))
            } else {
                "omitted".to_owned()
            }
        }
        Some(Value::String(s)) if s.starts_with("ps1_") => {
            let short: String = s.chars().take(12).collect();
            format!("pseudonym {short}…")
        }
        // The demo runs on the system clock.
        Some(Value::String(s)) => match Personnummer::parse_at(s, SystemClock.now().date()) {
            Ok(p) => format!("personnummer {}", p.masked()),
            Err(_) => "an unrecognised identifier".to_owned(),
        },
        Some(_) => "an unrecognised identifier".to_owned(),
    }
}

/// The top-level fields of a payload as JSON Pointers, sorted.
pub fn fields(payload: Option<&Value>) -> Vec<String> {
    let mut v: Vec<String> = payload
        .and_then(Value::as_object)
        .map(|o| o.keys().map(|k| crate::schema::field_pointer(k)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A list of pointers as `a, b, c`, or `(none)`.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// The JSON array of strings at `key`.
pub fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Explains withheld fields using the configuration and the schemas.
pub struct Explainer<'a> {
    config: &'a Config,
    schemas: Option<SchemaRegistry>,
}

impl<'a> Explainer<'a> {
    /// An explainer over the running configuration and the built-in schemas.
    pub fn new(config: &'a Config) -> Self {
        Explainer {
            config,
            schemas: SchemaRegistry::builtin().ok(),
        }
    }

    fn route(&self, from: &str, to: &str, ty: &str, purpose: &str) -> Option<&RouteConfig> {
        crate::policy::route::find(
            &self.config.routes,
            &crate::party::PartyId::new(from),
            &crate::party::PartyId::new(to),
            ty,
            purpose,
        )
    }

    /// The subject mode of the route, for the heading of a step.
    /// `None` when no route matches.
    pub fn subject_mode(
        &self,
        from: &str,
        to: &str,
        ty: &str,
        purpose: &str,
    ) -> Option<&'static str> {
        self.route(from, to, ty, purpose).map(|r| match r.subject {
            SubjectMode::Reveal => "revealed",
            SubjectMode::Pseudonymise => "pseudonymised",
            SubjectMode::Omit => "omitted",
        })
    }

    /// Why `pointer` was withheld on this exchange.
    pub fn why(&self, from: &str, to: &str, ty: &str, purpose: &str, pointer: &str) -> String {
        let Some(route) = self.route(from, to, ty, purpose) else {
            return "no route".to_owned();
        };
        let top = pointer
            .split('/')
            .nth(1)
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let info = self
            .schemas
            .as_ref()
            .and_then(|s| s.get(ty))
            .and_then(|s| s.field(&top));
        let category = info.map(|i| i.category);
        if info.is_some_and(|i| i.identifier) && route.subject == SubjectMode::Omit {
            return "an identifier, and the route omits the subject".to_owned();
        }
        let named = route.fields.iter().any(|f| f == &top || f == pointer);
        let wildcard = route.fields.iter().any(|f| f == "*");
        match (named, wildcard, category) {
            (false, true, Some(Category::FreeText)) => {
                "free text, which passes only where the route names it".to_owned()
            }
            (false, false, _) => "not on the route's field list".to_owned(),
            (_, _, Some(c)) => format!("category `{c}` is not covered by the consent"),
            (_, _, None) => "not in the message schema".to_owned(),
        }
    }
}
