//! Temporary stand-in until the schema branch lands (field filter).
use serde::{Deserialize, Serialize};

/// How the subject identifier travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectMode {
    /// Canonical personnummer.
    Reveal,
    /// Recipient-domain pseudonym.
    #[default]
    Pseudonymise,
    /// Removed.
    Omit,
}

/// Stand-in.
pub fn check_allow_list(_schema: &crate::schema::MessageSchema, _allow: &[String]) -> Result<(), String> {
    Ok(())
}
