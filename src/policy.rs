//! The field filter: which fields of a valid payload a route forwards
//! (DESIGN §4, §9 "Routes and payloads"). Pure: routes are configured by
//! the config module and passed in as plain values.
//!
//! Rules, for each top-level field present in the payload:
//!
//! - It is *allowed* if the route's allow-list names its pointer (`/name`),
//!   or the allow-list has `"*"` and the field is not `free-text`
//!   (free text passes only when the route names it explicitly).
//! - It is *covered* if the route requires no consent, or the consent's
//!   categories include the field's category.
//! - It is forwarded if allowed and covered; everything else present is
//!   withheld. A field the schema does not declare is always withheld.
//! - Identifier fields (`x-identifier: personnummer`) are parsed first,
//!   whether forwarded or not: an invalid one is
//!   [`FilterError::InvalidPersonnummer`] (422 `invalid_personnummer`).
//!   A forwarded one is handed to the caller's `identifiers` function, which
//!   returns the value to send (revealed or pseudonymised in the recipient's
//!   domain) or `None` to remove it (subject `omit`; then it is withheld).
//!
//! **Consent scope.** If at least one present field is allowed but none of
//! the allowed present fields is covered by the consent, nothing could be
//! forwarded *because of the consent*: that is [`FilterError::ConsentScope`],
//! which maps to 403 `consent_scope`. If some allowed field is covered, the
//! uncovered ones are just withheld. If no present field is allowed at all,
//! the result is an empty payload with everything withheld (the route, not
//! the consent, is what withholds).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::Date;

use crate::schema::{field_pointer, Category, CommaList, MessageSchema};
use crate::subject::personnummer::Personnummer;

pub mod route;

pub use route::{ConsentRequirement, RouteConfig};

/// The allow-list entry meaning "every field except free text".
pub const ALL_FIELDS: &str = "*";

/// How a route carries the subject identifier and identifier fields
/// (DESIGN §4; default `pseudonymise`, §9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectMode {
    /// The recipient gets the canonical personnummer.
    Reveal,
    /// The recipient gets a pseudonym in its own domain.
    #[default]
    Pseudonymise,
    /// The identifier is removed.
    Omit,
}

/// Errors of the field filter. None carries a personnummer or a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The payload is not a JSON object (it should have failed validation).
    #[error("payload is not a JSON object")]
    NotAnObject,
    /// An identifier field does not hold a valid personnummer or
    /// samordningsnummer. Maps to 422 `invalid_personnummer`.
    #[error("invalid personnummer or samordningsnummer at {pointer}")]
    InvalidPersonnummer {
        /// The JSON Pointer of the field.
        pointer: String,
    },
    /// The route would forward fields, but the consent covers none of their
    /// categories. Maps to 403 `consent_scope`.
    #[error("the consent covers none of the categories the route would forward ({})", CommaList(.uncovered, |c| c.as_str()))]
    ConsentScope {
        /// The categories of the allowed present fields, none of them covered, sorted.
        uncovered: Vec<Category>,
    },
}

/// What the filter needs: the schema, a payload already valid against it,
/// the route's allow-list, if consent is required its categories, and the
/// date identifier fields are parsed on.
#[derive(Clone, Copy)]
pub struct FilterInput<'a> {
    /// The schema of the message type.
    pub schema: &'a MessageSchema,
    /// The payload, already validated against `schema`.
    pub payload: &'a Value,
    /// The route's allow-list: top-level JSON Pointers or `"*"`.
    pub allow: &'a [String],
    /// The consent's categories; `None` if the route requires no consent.
    pub consent_categories: Option<&'a BTreeSet<Category>>,
    /// The gateway clock's date: identifier fields are personnummer on it.
    pub today: Date,
}

impl fmt::Debug for FilterInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterInput")
            .field("message_type", &self.schema.message_type())
            .field("payload", &"<redacted>")
            .field("allow", &self.allow)
            .field("consent_categories", &self.consent_categories)
            .field("today", &self.today)
            .finish()
    }
}

/// The filter's result.
#[derive(Clone, PartialEq)]
pub struct Filtered {
    /// A JSON object with only the forwarded fields (identifiers replaced).
    pub payload: Value,
    /// Pointers of the forwarded fields, sorted.
    pub forwarded: Vec<String>,
    /// Pointers of the present fields not forwarded, sorted.
    pub withheld: Vec<String>,
}

impl fmt::Debug for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filtered")
            .field("payload", &"<redacted>")
            .field("forwarded", &self.forwarded)
            .field("withheld", &self.withheld)
            .finish()
    }
}

/// Filters a payload for one route and recipient (see the module docs for
/// the rules). `identifiers` is called once per forwarded identifier field.
pub fn filter(
    input: FilterInput<'_>,
    identifiers: &mut dyn FnMut(&Personnummer) -> Option<String>,
) -> Result<Filtered, FilterError> {
    let object = input.payload.as_object().ok_or(FilterError::NotAnObject)?;
    check_identifiers(input.schema, input.payload, input.today)?;
    let star = input.allow.iter().any(|entry| entry == ALL_FIELDS);

    let mut forwarded = BTreeSet::new();
    let mut withheld = BTreeSet::new();
    let mut uncovered = BTreeSet::new();
    let mut payload = Map::new();
    let mut any_allowed = false;
    let mut any_allowed_covered = false;

    for (name, value) in object {
        let pointer = field_pointer(name);
        let Some(info) = input.schema.field(&pointer).copied() else {
            withheld.insert(pointer);
            continue;
        };
        let allowed =
            input.allow.contains(&pointer) || (star && info.category != Category::FreeText);
        let covered = input
            .consent_categories
            .is_none_or(|categories| categories.contains(&info.category));
        any_allowed |= allowed;
        any_allowed_covered |= allowed && covered;
        if allowed && !covered {
            uncovered.insert(info.category);
        }
        if !(allowed && covered) {
            withheld.insert(pointer);
            continue;
        }
        let value = if info.identifier {
            // `check_identifiers` above has parsed every identifier field.
            let pnr = value
                .as_str()
                .and_then(|s| Personnummer::parse_at(s, input.today).ok());
            let Some(pnr) = pnr else {
                return Err(FilterError::InvalidPersonnummer { pointer });
            };
            match identifiers(&pnr) {
                Some(replacement) => Value::String(replacement),
                None => {
                    withheld.insert(pointer);
                    continue;
                }
            }
        } else {
            value.clone()
        };
        payload.insert(name.clone(), value);
        forwarded.insert(pointer);
    }

    // Consent scope (module docs): something was allowed, nothing allowed was covered.
    if any_allowed && !any_allowed_covered {
        return Err(FilterError::ConsentScope {
            uncovered: uncovered.into_iter().collect(),
        });
    }

    Ok(Filtered {
        payload: Value::Object(payload),
        forwarded: forwarded.into_iter().collect(),
        withheld: withheld.into_iter().collect(),
    })
}

/// Checks that every identifier field present in the payload holds a valid
/// personnummer on `today`, whatever the route; the exchange can call this
/// with the payload validation so that a bad number is 422 before any 403.
pub fn check_identifiers(
    schema: &MessageSchema,
    payload: &Value,
    today: Date,
) -> Result<(), FilterError> {
    let object = payload.as_object().ok_or(FilterError::NotAnObject)?;
    for (name, value) in object {
        let pointer = field_pointer(name);
        if !schema.field(&pointer).is_some_and(|info| info.identifier) {
            continue;
        }
        let invalid = value
            .as_str()
            .is_none_or(|s| Personnummer::parse_at(s, today).is_err());
        if invalid {
            return Err(FilterError::InvalidPersonnummer { pointer });
        }
    }
    Ok(())
}

/// Checks a route's allow-list against a schema (for config validation):
/// every entry must be `"*"` or the pointer of a declared top-level field.
/// Returns the first bad entry.
pub fn check_allow_list(schema: &MessageSchema, allow: &[String]) -> Result<(), String> {
    match allow
        .iter()
        .find(|entry| *entry != ALL_FIELDS && schema.field(entry).is_none())
    {
        Some(bad) => Err(bad.clone()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{builtin_example, SchemaRegistry, KNOWN_TYPES};
    use serde_json::json;
    use time::macros::date;

    /// The date the tests parse numbers on.
    const TODAY: Date = date!(2026 - 06 - 15);

    fn registry() -> SchemaRegistry {
        SchemaRegistry::builtin().expect("built-in schemas load")
    }

    fn example(message_type: &str) -> Value {
        serde_json::from_str(builtin_example(message_type).expect("example")).expect("JSON")
    }

    fn allow(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    fn categories(list: &[Category]) -> BTreeSet<Category> {
        list.iter().copied().collect()
    }

    fn run(
        reg: &SchemaRegistry,
        message_type: &str,
        payload: &Value,
        allow: &[String],
        consent: Option<&BTreeSet<Category>>,
    ) -> Result<Filtered, FilterError> {
        let input = FilterInput {
            schema: reg.get(message_type).expect("schema"),
            payload,
            allow,
            consent_categories: consent,
            today: TODAY,
        };
        filter(input, &mut |_| Some("ps1_test".to_owned()))
    }

    #[test]
    fn only_allow_listed_fields_are_forwarded() {
        let reg = registry();
        let payload = example("attendance-report");
        let allowed = allow(&["/period", "/attended_hours", "/absence_reason_category"]);
        let all = categories(&Category::ALL);
        let out = run(&reg, "attendance-report", &payload, &allowed, Some(&all)).expect("filter");
        assert_eq!(
            out.forwarded,
            ["/absence_reason_category", "/attended_hours", "/period"]
        );
        assert_eq!(out.withheld, ["/scheduled_hours"]);
        assert_eq!(
            out.payload,
            json!({"period": payload["period"], "attended_hours": 27, "absence_reason_category": "sick"})
        );
    }

    #[test]
    fn fields_outside_the_consent_categories_are_withheld() {
        let reg = registry();
        let payload = example("referral");
        let consent = categories(&[Category::Case, Category::Outcome, Category::Benefit]);
        let out = run(&reg, "referral", &payload, &allow(&["*"]), Some(&consent)).expect("filter");
        assert_eq!(
            out.forwarded,
            [
                "/decision",
                "/income_source",
                "/ordinary_measures_tried",
                "/referral_date",
                "/referral_id",
                "/suggested_measure"
            ]
        );
        assert!(out.withheld.contains(&"/phone".to_owned()));
        assert!(out.withheld.contains(&"/subject".to_owned()));
        assert!(out.withheld.contains(&"/health_summary".to_owned()));
        assert_eq!(out.forwarded.len() + out.withheld.len(), 20);
    }

    #[test]
    fn star_leaves_out_free_text_unless_named() {
        let reg = registry();
        let payload = example("work-capacity-assessment");
        let out = run(
            &reg,
            "work-capacity-assessment",
            &payload,
            &allow(&["*"]),
            None,
        )
        .expect("filter");
        assert_eq!(out.withheld, ["/notes"]);
        assert!(out.payload.get("notes").is_none());
        let out = run(
            &reg,
            "work-capacity-assessment",
            &payload,
            &allow(&["*", "/notes"]),
            None,
        )
        .expect("filter");
        assert!(out.withheld.is_empty());
        assert_eq!(out.payload, payload);
    }

    #[test]
    fn identifier_fields_are_replaced_by_what_the_caller_returns() {
        let reg = registry();
        let payload = example("referral");
        let allowed = allow(&["/subject", "/decision"]);
        let schema = reg.get("referral").expect("schema");
        for replacement in ["200203149828", "ps1_abcdefghijklmnopqrstuvwxyz"] {
            let mut calls = 0;
            let input = FilterInput {
                schema,
                payload: &payload,
                allow: &allowed,
                consent_categories: None,
                today: TODAY,
            };
            let out = filter(input, &mut |_| {
                calls += 1;
                Some(replacement.to_owned())
            })
            .expect("filter");
            assert_eq!(calls, 1);
            assert_eq!(out.forwarded, ["/decision", "/subject"]);
            assert_eq!(out.payload["subject"], json!(replacement));
        }
    }

    #[test]
    fn an_omitted_identifier_is_removed_and_withheld() {
        let reg = registry();
        let payload = example("referral");
        let allowed = allow(&["/subject", "/decision"]);
        let input = FilterInput {
            schema: reg.get("referral").expect("schema"),
            payload: &payload,
            allow: &allowed,
            consent_categories: None,
            today: TODAY,
        };
        let out = filter(input, &mut |_| None).expect("filter");
        assert_eq!(out.forwarded, ["/decision"]);
        assert!(out.withheld.contains(&"/subject".to_owned()));
        assert_eq!(out.payload, json!({"decision": "accepted"}));
    }

    #[test]
    fn an_invalid_identifier_is_refused_without_echoing_it() {
        let reg = registry();
        let mut payload = example("referral");
        payload["subject"] = json!("20020314-9827"); // wrong check digit
        for allowed in [allow(&["/subject"]), allow(&["/decision"])] {
            let err = run(&reg, "referral", &payload, &allowed, None).expect_err("invalid");
            assert_eq!(
                err,
                FilterError::InvalidPersonnummer {
                    pointer: "/subject".into()
                }
            );
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains("9827"), "{text}");
            }
        }
        let schema = reg.get("referral").expect("schema");
        assert!(check_identifiers(schema, &payload, TODAY).is_err());
        assert!(check_identifiers(schema, &example("referral"), TODAY).is_ok());
    }

    #[test]
    fn consent_covering_none_of_the_allowed_fields_is_consent_scope() {
        let reg = registry();
        let payload = example("attendance-report");
        let allowed = allow(&["/period", "/attended_hours"]);
        let consent = categories(&[Category::Health, Category::Benefit]);
        let err = run(
            &reg,
            "attendance-report",
            &payload,
            &allowed,
            Some(&consent),
        )
        .expect_err("scope");
        assert_eq!(
            err,
            FilterError::ConsentScope {
                uncovered: vec![Category::Attendance]
            }
        );
        // Without a consent requirement the same route forwards.
        let out = run(&reg, "attendance-report", &payload, &allowed, None).expect("filter");
        assert_eq!(out.forwarded, ["/attended_hours", "/period"]);
    }

    #[test]
    fn partly_covered_is_not_consent_scope() {
        let reg = registry();
        let payload = example("closure");
        let consent = categories(&[Category::Outcome]);
        let out = run(&reg, "closure", &payload, &allow(&["*"]), Some(&consent)).expect("filter");
        assert_eq!(out.withheld, ["/future_plan", "/hours_per_week"]);
    }

    #[test]
    fn nothing_allowed_is_an_empty_payload_not_an_error() {
        let reg = registry();
        let payload =
            json!({"period": {"start": "2025-11-01", "end": "2025-11-30"}, "attended_hours": 3});
        let consent = categories(&[Category::Health]);
        let out = run(
            &reg,
            "attendance-report",
            &payload,
            &allow(&["/scheduled_hours"]),
            Some(&consent),
        )
        .expect("filter");
        assert!(out.forwarded.is_empty());
        assert_eq!(out.withheld, ["/attended_hours", "/period"]);
        assert_eq!(out.payload, json!({}));
    }

    #[test]
    fn debug_output_hides_payload_values() {
        let reg = registry();
        let payload = example("referral");
        let out = run(&reg, "referral", &payload, &allow(&["*"]), None).expect("filter");
        let text = format!("{out:?}");
        assert!(
            !text.contains("Alva") && !text.contains("ps1_test"),
            "{text}"
        );
        let input = FilterInput {
            schema: reg.get("referral").expect("schema"),
            payload: &payload,
            allow: &[],
            consent_categories: None,
            today: TODAY,
        };
        assert!(!format!("{input:?}").contains("Alva"));
    }

    #[test]
    fn allow_lists_name_declared_fields_or_star() {
        let reg = registry();
        let schema = reg.get("attendance-report").expect("schema");
        assert_eq!(check_allow_list(schema, &allow(&["*", "/period"])), Ok(()));
        assert_eq!(
            check_allow_list(schema, &allow(&["/period", "/period/start"])),
            Err("/period/start".to_owned())
        );
        assert_eq!(
            check_allow_list(schema, &allow(&["period"])),
            Err("period".to_owned())
        );
    }

    #[test]
    fn subject_mode_is_lowercase_and_defaults_to_pseudonymise() {
        assert_eq!(SubjectMode::default(), SubjectMode::Pseudonymise);
        let mode: SubjectMode = serde_json::from_str("\"omit\"").expect("parse");
        assert_eq!(mode, SubjectMode::Omit);
        assert_eq!(
            serde_json::to_string(&SubjectMode::Reveal).expect("json"),
            "\"reveal\""
        );
    }

    /// A minimal reading of `config/demo-routes.toml` (the config module has the real one).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DemoRoutes {
        route: Vec<DemoRoute>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DemoRoute {
        from: Vec<String>,
        to: Vec<String>,
        #[serde(rename = "type")]
        message_type: String,
        purposes: Vec<String>,
        fields: Vec<String>,
        #[serde(default)]
        subject: SubjectMode,
        consent: Option<String>,
    }

    fn demo_routes() -> Vec<DemoRoute> {
        let text = include_str!("../config/demo-routes.toml");
        toml::from_str::<DemoRoutes>(text)
            .expect("demo routes parse")
            .route
    }

    #[test]
    fn demo_routes_name_known_types_parties_purposes_and_fields() {
        let reg = registry();
        let parties = ["fk", "af", "kommun-kalmar", "region-kalmar", "sfk-kalmar"];
        let purposes = ["samordnad-rehabilitering", "uppfoljning", "statistik"];
        let mut seen = BTreeSet::new();
        for route in demo_routes() {
            assert!(KNOWN_TYPES.contains(&route.message_type.as_str()));
            let schema = reg.get(&route.message_type).expect("schema");
            assert_eq!(check_allow_list(schema, &route.fields), Ok(()));
            assert!(route
                .purposes
                .iter()
                .all(|p| purposes.contains(&p.as_str())));
            assert!(matches!(
                route.consent.as_deref(),
                None | Some("required") | Some("not-required")
            ));
            for from in &route.from {
                for to in &route.to {
                    assert!(parties.contains(&from.as_str()) && parties.contains(&to.as_str()));
                    assert_ne!(from, to);
                    let key = (from.clone(), to.clone(), route.message_type.clone());
                    assert!(
                        seen.insert(key),
                        "{from} -> {to} {} twice",
                        route.message_type
                    );
                }
            }
        }
    }

    #[test]
    fn demo_routes_keep_the_contract_examples() {
        let routes = demo_routes();
        let attendance = routes
            .iter()
            .find(|r| r.from == ["af"] && r.to == ["fk"] && r.message_type == "attendance-report")
            .expect("af -> fk attendance-report");
        assert_eq!(
            attendance.fields,
            ["/period", "/attended_hours", "/absence_reason_category"]
        );
        assert_eq!(attendance.purposes, ["samordnad-rehabilitering"]);
        assert_eq!(attendance.subject, SubjectMode::Reveal);
        assert_eq!(attendance.consent.as_deref(), Some("required"));
        assert!(routes
            .iter()
            .any(|r| r.subject == SubjectMode::Pseudonymise));
        for route in &routes {
            let statistics = route.message_type == "statistics-report";
            assert_eq!(route.consent.as_deref() == Some("not-required"), statistics);
            if statistics {
                assert_eq!(route.subject, SubjectMode::Omit);
            }
        }
        // Every type of the participant's path has a route.
        for message_type in KNOWN_TYPES {
            assert!(routes.iter().any(|r| r.message_type == message_type));
        }
    }

    #[test]
    fn demo_routes_forward_the_examples_and_withhold_some_fields() {
        let reg = registry();
        let all = categories(&Category::ALL);
        let mut withheld_somewhere = false;
        for route in demo_routes() {
            let payload = example(&route.message_type);
            let consent = (route.consent.as_deref() != Some("not-required")).then_some(&all);
            let out =
                run(&reg, &route.message_type, &payload, &route.fields, consent).expect("filter");
            assert!(!out.forwarded.is_empty(), "{}", route.message_type);
            withheld_somewhere |= !out.withheld.is_empty();
            if route.message_type == "medical-certificate" {
                assert!(out.withheld.contains(&"/clinical_notes".to_owned()));
            }
        }
        assert!(withheld_somewhere);
    }
}
