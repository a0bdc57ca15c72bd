//! Message schemas: the built-in JSON Schemas (2020-12) of `schemas/`, the
//! data category of every field, and payload validation (DESIGN §4).
//!
//! A *field* is a top-level property of a payload; its path is the JSON
//! Pointer `/name` (RFC 6901). Nested objects and arrays are one field each.
//! Every field declares `x-category`, and identifier fields declare
//! `x-identifier: personnummer`; a schema without them does not load.
//!
//! Validation errors name the failing instance paths only, never values:
//! the `jsonschema` crate's messages quote the offending value, so they are
//! not used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The names of the built-in message types, in the order of the participant's path.
pub const KNOWN_TYPES: [&str; 9] = [
    "referral",
    "benefit-status",
    "work-capacity-assessment",
    "rehabilitation-plan",
    "attendance-report",
    "medical-certificate",
    "closure",
    "follow-up",
    "statistics-report",
];

/// The built-in schemas and their example payloads, embedded so that the
/// binary is self-contained: (type, schema, example).
const BUILTIN: [(&str, &str, &str); 9] = [
    (
        "referral",
        include_str!("../schemas/referral.json"),
        include_str!("../schemas/examples/referral.json"),
    ),
    (
        "benefit-status",
        include_str!("../schemas/benefit-status.json"),
        include_str!("../schemas/examples/benefit-status.json"),
    ),
    (
        "work-capacity-assessment",
        include_str!("../schemas/work-capacity-assessment.json"),
        include_str!("../schemas/examples/work-capacity-assessment.json"),
    ),
    (
        "rehabilitation-plan",
        include_str!("../schemas/rehabilitation-plan.json"),
        include_str!("../schemas/examples/rehabilitation-plan.json"),
    ),
    (
        "attendance-report",
        include_str!("../schemas/attendance-report.json"),
        include_str!("../schemas/examples/attendance-report.json"),
    ),
    (
        "medical-certificate",
        include_str!("../schemas/medical-certificate.json"),
        include_str!("../schemas/examples/medical-certificate.json"),
    ),
    (
        "closure",
        include_str!("../schemas/closure.json"),
        include_str!("../schemas/examples/closure.json"),
    ),
    (
        "follow-up",
        include_str!("../schemas/follow-up.json"),
        include_str!("../schemas/examples/follow-up.json"),
    ),
    (
        "statistics-report",
        include_str!("../schemas/statistics-report.json"),
        include_str!("../schemas/examples/statistics-report.json"),
    ),
];

/// The value of `x-identifier` that marks a personnummer field.
const IDENTIFIER_PERSONNUMMER: &str = "personnummer";

/// Errors of loading schemas and of validating payloads against them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A schema file is not JSON.
    #[error("schema {message_type} is not valid JSON: {reason}")]
    Parse {
        /// The message type of the schema.
        message_type: String,
        /// The parser's message (about the schema text, not a payload).
        reason: String,
    },
    /// A schema does not compile as JSON Schema 2020-12.
    #[error("schema {message_type} does not compile: {reason}")]
    Compile {
        /// The message type of the schema.
        message_type: String,
        /// The compiler's message (about the schema, not a payload).
        reason: String,
    },
    /// A schema is not a closed object schema (`"type": "object"`,
    /// `"additionalProperties": false`, `properties`).
    #[error("schema {message_type} must be an object schema with properties and additionalProperties false")]
    NotClosedObject {
        /// The message type of the schema.
        message_type: String,
    },
    /// A top-level property lacks a known `x-category`.
    #[error("schema {message_type}: property {pointer} has no known x-category")]
    Category {
        /// The message type of the schema.
        message_type: String,
        /// The property's JSON Pointer.
        pointer: String,
    },
    /// A property has an `x-identifier` other than `personnummer`.
    #[error("schema {message_type}: property {pointer} has an unknown x-identifier")]
    Identifier {
        /// The message type of the schema.
        message_type: String,
        /// The property's JSON Pointer.
        pointer: String,
    },
    /// A schema marks a property below the top level with `x-identifier`
    /// (DESIGN §10): only top-level identifier fields are pseudonymised, so
    /// a nested one would be forwarded in clear. Refused at start.
    #[error("schema {message_type}: x-identifier below the top level at {pointer}")]
    NestedIdentifier {
        /// The message type of the schema.
        message_type: String,
        /// The JSON Pointer, within the schema document, of the marked subschema.
        pointer: String,
    },
    /// A payload does not match its schema. Carries the failing instance
    /// paths as sorted, de-duplicated JSON Pointers (`""` is the payload
    /// itself); never the values.
    #[error("payload does not match the schema at {}", CommaList(.pointers, |p| pointer_name(p)))]
    Violation {
        /// Sorted, de-duplicated JSON Pointers of the failing places.
        pointers: Vec<String>,
    },
}

/// Displays a list in an error message, comma-separated, each item as
/// the given function names it.
pub(crate) struct CommaList<'a, T>(pub &'a [T], pub fn(&T) -> &str);

impl<T> fmt::Display for CommaList<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str((self.1)(item))?;
        }
        Ok(())
    }
}

/// A JSON Pointer as error messages name it: `""` (the root) as `(root)`.
fn pointer_name(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(root)"
    } else {
        pointer
    }
}

/// The data category of a field (DESIGN §4); consents name the categories
/// they cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Case administration: ids, dates, periods, stage.
    Case,
    /// Who the participant is: identifiers, names.
    Identity,
    /// How to reach the participant.
    Contact,
    /// Benefits and their periods.
    Benefit,
    /// Work, work capacity, employment-service matters.
    Employment,
    /// Schooling and studies.
    Education,
    /// Attendance and schedules.
    Attendance,
    /// Health data (GDPR art. 9).
    Health,
    /// Social-services matters (socialtjänst, LSS, SoL).
    SocialServices,
    /// Decisions, goals, results.
    Outcome,
    /// Free text; forwarded only where a route names the field.
    FreeText,
}

impl Category {
    /// Every category, in declaration order.
    pub const ALL: [Category; 11] = [
        Category::Case,
        Category::Identity,
        Category::Contact,
        Category::Benefit,
        Category::Employment,
        Category::Education,
        Category::Attendance,
        Category::Health,
        Category::SocialServices,
        Category::Outcome,
        Category::FreeText,
    ];

    /// The wire name, e.g. `social-services`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Case => "case",
            Category::Identity => "identity",
            Category::Contact => "contact",
            Category::Benefit => "benefit",
            Category::Employment => "employment",
            Category::Education => "education",
            Category::Attendance => "attendance",
            Category::Health => "health",
            Category::SocialServices => "social-services",
            Category::Outcome => "outcome",
            Category::FreeText => "free-text",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown category name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data category {0:?}")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCategory(s.to_owned()))
    }
}

/// What the schema says about one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field's data category.
    pub category: Category,
    /// Whether the field is a personnummer (`x-identifier: personnummer`).
    pub identifier: bool,
}

/// One message type's compiled schema and field map.
pub struct MessageSchema {
    message_type: String,
    validator: Validator,
    fields: BTreeMap<String, FieldInfo>,
}

impl fmt::Debug for MessageSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageSchema")
            .field("message_type", &self.message_type)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl MessageSchema {
    /// Parses and compiles one schema, extracting its field map.
    pub fn compile(message_type: &str, source: &str) -> Result<MessageSchema, SchemaError> {
        let schema: Value = serde_json::from_str(source).map_err(|e| SchemaError::Parse {
            message_type: message_type.to_owned(),
            reason: e.to_string(),
        })?;
        let fields = field_map(message_type, &schema)?;
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| SchemaError::Compile {
                message_type: message_type.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(MessageSchema {
            message_type: message_type.to_owned(),
            validator,
            fields,
        })
    }

    /// The message type this schema describes.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// Every declared field, by pointer (`/name`).
    pub fn fields(&self) -> &BTreeMap<String, FieldInfo> {
        &self.fields
    }

    /// The declared field at `pointer` (`/name`), if any.
    pub fn field(&self, pointer: &str) -> Option<&FieldInfo> {
        self.fields.get(pointer)
    }

    /// Validates a payload. On failure the error lists the failing places:
    /// for a missing required property, the pointer of that property; for an
    /// unexpected property, its pointer; otherwise the failing value's path.
    pub fn validate(&self, payload: &Value) -> Result<(), SchemaError> {
        // Fast path: `is_valid` short-circuits and builds no error values.
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let mut pointers = BTreeSet::new();
        for error in self.validator.iter_errors(payload) {
            // Payload keys are the client's: each segment is named only
            // when it looks like a field name (never a personnummer).
            let base = shown_pointer(error.instance_path.as_str());
            let base = base.as_str();
            match &error.kind {
                ValidationErrorKind::Required { property } => {
                    pointers.insert(match property.as_str() {
                        Some(name) => child_pointer(base, name),
                        None => base.to_owned(),
                    });
                }
                ValidationErrorKind::AdditionalProperties { unexpected }
                | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                    pointers.extend(
                        unexpected
                            .iter()
                            .map(|name| child_pointer(base, crate::http::error::shown_key(name))),
                    );
                }
                _ => {
                    pointers.insert(base.to_owned());
                }
            }
        }
        Err(SchemaError::Violation {
            pointers: pointers.into_iter().collect(),
        })
    }
}

/// The built-in example payload of a message type (`schemas/examples/`):
/// complete, valid and fictional; the demo and tests send these.
pub fn builtin_example(message_type: &str) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(name, _, _)| *name == message_type)
        .map(|(_, _, example)| *example)
}

/// The JSON Pointer of a top-level property: `/` + the escaped name.
pub fn field_pointer(name: &str) -> String {
    child_pointer("", name)
}

/// A JSON Pointer with each segment passed through
/// [`crate::http::error::shown_key`] (escaped segments are not shown).
fn shown_pointer(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for segment in pointer.split('/').skip(1) {
        out.push('/');
        out.push_str(crate::http::error::shown_key(segment));
    }
    out
}

/// Appends one escaped reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
fn child_pointer(base: &str, name: &str) -> String {
    let mut pointer = String::with_capacity(base.len() + name.len() + 1);
    pointer.push_str(base);
    pointer.push('/');
    for c in name.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
    pointer
}

/// Reads the top-level properties' `x-category` and `x-identifier`, and
/// refuses schemas that are not closed objects (default deny, DESIGN §4).
fn field_map(
    message_type: &str,
    schema: &Value,
) -> Result<BTreeMap<String, FieldInfo>, SchemaError> {
    let not_closed = || SchemaError::NotClosedObject {
        message_type: message_type.to_owned(),
    };
    let closed = schema.get("type").and_then(Value::as_str) == Some("object")
        && schema.get("additionalProperties") == Some(&Value::Bool(false));
    if !closed {
        return Err(not_closed());
    }
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(not_closed)?;
    let mut fields = BTreeMap::new();
    if let Some(pointer) = nested_identifier(schema, "", 0) {
        return Err(SchemaError::NestedIdentifier {
            message_type: message_type.to_owned(),
            pointer,
        });
    }
    for (name, property) in properties {
        let pointer = field_pointer(name);
        let category = property
            .get("x-category")
            .and_then(Value::as_str)
            .and_then(|c| c.parse::<Category>().ok())
            .ok_or_else(|| SchemaError::Category {
                message_type: message_type.to_owned(),
                pointer: pointer.clone(),
            })?;
        let identifier = match property.get("x-identifier") {
            None => false,
            Some(v) if v.as_str() == Some(IDENTIFIER_PERSONNUMMER) => true,
            Some(_) => {
                return Err(SchemaError::Identifier {
                    message_type: message_type.to_owned(),
                    pointer,
                })
            }
        };
        fields.insert(
            pointer,
            FieldInfo {
                category,
                identifier,
            },
        );
    }
    Ok(fields)
}

/// The schema-document pointer of the first `x-identifier` that is not on
/// a top-level property (`/properties/<name>`), if any. `depth` 0 is the
/// root, 1 its `properties` object, 2 a top-level property schema.
fn nested_identifier(value: &Value, at: &str, depth: usize) -> Option<String> {
    match value {
        Value::Object(map) => {
            let top_level_property = depth == 2 && at.starts_with("/properties/");
            if map.contains_key("x-identifier") && !top_level_property {
                return Some(at.to_owned());
            }
            map.iter().find_map(|(k, v)| {
                let child = format!("{at}{}", field_pointer(k));
                let d = if depth == 0 && k == "properties" || depth == 1 {
                    depth + 1
                } else {
                    usize::MAX / 2
                };
                nested_identifier(v, &child, d)
            })
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nested_identifier(v, &format!("{at}/{i}"), usize::MAX / 2)),
        _ => None,
    }
}

/// The compiled schemas of every known message type.
#[derive(Debug)]
pub struct SchemaRegistry {
    schemas: BTreeMap<String, MessageSchema>,
}

impl SchemaRegistry {
    /// Compiles the built-in schemas (embedded at build time). Call once at start.
    pub fn builtin() -> Result<SchemaRegistry, SchemaError> {
        SchemaRegistry::from_sources(BUILTIN.map(|(name, schema, _)| (name, schema)))
    }

    /// Compiles schemas from `(message type, schema JSON)` pairs.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SchemaRegistry, SchemaError> {
        let schemas = sources
            .into_iter()
            .map(|(name, source)| Ok((name.to_owned(), MessageSchema::compile(name, source)?)))
            .collect::<Result<_, SchemaError>>()?;
        Ok(SchemaRegistry { schemas })
    }

    /// The schema of a message type; `None` for an unknown type.
    pub fn get(&self, message_type: &str) -> Option<&MessageSchema> {
        self.schemas.get(message_type)
    }

    /// The names of the registered message types, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.schemas.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> SchemaRegistry {
        SchemaRegistry::builtin().expect("built-in schemas load")
    }

    fn example(message_type: &str) -> Value {
        serde_json::from_str(builtin_example(message_type).expect("example exists"))
            .expect("example is JSON")
    }

    fn violation(schema: &MessageSchema, payload: &Value) -> (Vec<String>, SchemaError) {
        let err = schema.validate(payload).expect_err("payload is invalid");
        match &err {
            SchemaError::Violation { pointers } => (pointers.clone(), err),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn every_known_type_has_a_schema_and_nothing_else_does() {
        let reg = registry();
        let mut known = KNOWN_TYPES.to_vec();
        known.sort_unstable();
        assert_eq!(reg.types().collect::<Vec<_>>(), known);
    }

    #[test]
    fn every_example_is_valid_and_complete() {
        let reg = registry();
        for message_type in KNOWN_TYPES {
            let schema = reg.get(message_type).expect("schema");
            let payload = example(message_type);
            assert_eq!(schema.validate(&payload).ok(), Some(()), "{message_type}");
            let present: Vec<String> = payload
                .as_object()
                .expect("object")
                .keys()
                .map(|k| field_pointer(k))
                .collect();
            let declared: Vec<String> = schema.fields().keys().cloned().collect();
            let mut present = present;
            present.sort();
            assert_eq!(present, declared, "{message_type} example is not complete");
        }
    }

    #[test]
    fn referral_subject_is_an_identity_identifier() {
        let reg = registry();
        let referral = reg.get("referral").expect("referral");
        assert_eq!(
            referral.field("/subject"),
            Some(&FieldInfo {
                category: Category::Identity,
                identifier: true
            })
        );
        assert_eq!(
            referral.field("/own_goal").map(|f| f.category),
            Some(Category::FreeText)
        );
        assert!(referral.field("/decision").is_some());
        assert!(referral.field("/suggested_measure").is_some());
    }

    #[test]
    fn statistics_report_has_no_identity_or_contact_fields() {
        let reg = registry();
        let stats = reg.get("statistics-report").expect("statistics-report");
        for (pointer, info) in stats.fields() {
            assert!(!info.identifier, "{pointer}");
            assert!(
                !matches!(info.category, Category::Identity | Category::Contact),
                "{pointer}"
            );
        }
    }

    #[test]
    fn only_referral_carries_identifier_fields() {
        let reg = registry();
        for message_type in KNOWN_TYPES {
            let schema = reg.get(message_type).expect("schema");
            let identifiers: Vec<&String> = schema
                .fields()
                .iter()
                .filter(|(_, f)| f.identifier)
                .map(|(p, _)| p)
                .collect();
            if message_type == "referral" {
                assert_eq!(identifiers, ["/subject"]);
            } else {
                assert!(identifiers.is_empty(), "{message_type}");
            }
        }
    }

    #[test]
    fn violations_name_pointers_and_never_values() {
        let reg = registry();
        let schema = reg.get("attendance-report").expect("schema");
        let mut payload = example("attendance-report");
        let obj = payload.as_object_mut().expect("object");
        obj.insert("attended_hours".into(), json!("secret-value-27"));
        obj.remove("period");
        obj.insert("patient_name".into(), json!("Alva Exempeldotter"));
        obj.insert("absence_reason_category".into(), json!("depression-F32"));
        let (pointers, err) = violation(schema, &payload);
        assert_eq!(
            pointers,
            [
                "/absence_reason_category",
                "/attended_hours",
                "/patient_name",
                "/period"
            ]
        );
        for text in [err.to_string(), format!("{err:?}")] {
            for value in ["secret-value-27", "Alva", "depression", "F32"] {
                assert!(!text.contains(value), "{text} contains {value}");
            }
        }
    }

    #[test]
    fn nested_errors_carry_nested_pointers() {
        let reg = registry();
        let schema = reg.get("attendance-report").expect("schema");
        let payload = json!({"period": {"start": "2025-13-45", "extra": 1}, "attended_hours": -1});
        let (pointers, _) = violation(schema, &payload);
        assert_eq!(
            pointers,
            [
                "/attended_hours",
                "/period/end",
                "/period/extra",
                "/period/start"
            ]
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_fails_at_the_root() {
        let reg = registry();
        let schema = reg.get("closure").expect("schema");
        let (pointers, err) = violation(schema, &json!(["200203149828"]));
        assert_eq!(pointers, [""]);
        assert!(!err.to_string().contains("200203149828"));
    }

    #[test]
    fn an_empty_referral_is_invalid_but_a_bare_reply_is_valid() {
        let reg = registry();
        let referral = reg.get("referral").expect("schema");
        assert!(referral.validate(&json!({})).is_err());
        assert!(referral
            .validate(&json!({"decision": "accepted", "suggested_measure": "group-activity"}))
            .is_ok());
    }

    #[test]
    fn a_property_without_category_is_a_load_error() {
        let source = r#"{"type": "object", "additionalProperties": false,
            "properties": {"a": {"type": "string", "x-category": "case"}, "b": {"type": "string"}}}"#;
        let err = SchemaRegistry::from_sources([("t", source)]).expect_err("must fail");
        assert!(matches!(err, SchemaError::Category { ref pointer, .. } if pointer == "/b"));
        let unknown = source.replace(
            r#""type": "string"}}"#,
            r#""type": "string", "x-category": "x"}}"#,
        );
        assert!(SchemaRegistry::from_sources([("t", unknown.as_str())]).is_err());
    }

    #[test]
    fn an_open_schema_is_a_load_error() {
        let source = r#"{"type": "object", "properties": {"a": {"x-category": "case"}}}"#;
        let err = SchemaRegistry::from_sources([("t", source)]).expect_err("must fail");
        assert!(matches!(err, SchemaError::NotClosedObject { .. }));
    }

    #[test]
    fn an_identifier_below_the_top_level_is_refused() {
        for (schema, at) in [
            (
                r#"{"type": "object", "additionalProperties": false,
                "properties": {"p": {"x-category": "identity", "type": "object",
                "properties": {"pnr": {"type": "string", "x-identifier": "personnummer"}}}}}"#,
                "/properties/p/properties/pnr",
            ),
            (
                r#"{"type": "object", "additionalProperties": false,
                "properties": {"l": {"x-category": "case", "type": "array",
                "items": {"type": "string", "x-identifier": "personnummer"}}}}"#,
                "/properties/l/items",
            ),
            (
                r##"{"type": "object", "additionalProperties": false,
                "properties": {"a": {"x-category": "case", "$ref": "#/$defs/p"}},
                "$defs": {"p": {"type": "string", "x-identifier": "personnummer"}}}"##,
                "/$defs/p",
            ),
        ] {
            match SchemaRegistry::from_sources([("t", schema)]) {
                Err(SchemaError::NestedIdentifier { pointer, .. }) => assert_eq!(pointer, at),
                other => panic!("{at}: {other:?}"),
            }
        }
        // The top-level marker of the built-in referral stays accepted.
        assert!(SchemaRegistry::builtin().is_ok());
    }

    #[test]
    fn a_bad_identifier_marker_is_a_load_error() {
        let source = r#"{"type": "object", "additionalProperties": false,
            "properties": {"a": {"x-category": "identity", "x-identifier": "email"}}}"#;
        let err = SchemaRegistry::from_sources([("t", source)]).expect_err("must fail");
        assert!(matches!(err, SchemaError::Identifier { .. }));
    }

    #[test]
    fn categories_round_trip_through_str_and_serde() {
        for category in Category::ALL {
            assert_eq!(category.as_str().parse::<Category>(), Ok(category));
            let json = serde_json::to_string(&category).expect("serialise");
            assert_eq!(json, format!("\"{}\"", category.as_str()));
        }
        assert!("social_services".parse::<Category>().is_err());
    }

    #[test]
    fn pointers_escape_tilde_and_slash() {
        assert_eq!(field_pointer("a/b~c"), "/a~1b~0c");
    }

    #[test]
    fn message_schema_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SchemaRegistry>();
    }
}
