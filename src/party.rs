//! The parties of a deployment (DESIGN §1): their ids, roles and kinds.
//! Plain values shared by config, authentication, policy and audit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A party id such as `fk` or `kommun-kalmar` (DESIGN §1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartyId(String);

impl PartyId {
    /// Wraps a party id. Only config and lookups against config create these.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a party may do (DESIGN §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends and receives exchanges.
    Agency,
    /// Records and withdraws consent, asks for register extracts.
    Intake,
    /// Reads and verifies the audit log (a JWT user is required).
    Auditor,
}

impl Role {
    /// The role's name as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agency => "agency",
            Role::Intake => "intake",
            Role::Auditor => "auditor",
        }
    }
}

/// The kind of organisation behind a party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartyKind {
    /// Försäkringskassan.
    Forsakringskassan,
    /// Arbetsförmedlingen.
    Arbetsformedlingen,
    /// A municipality.
    Kommun,
    /// A region (healthcare).
    Region,
    /// A samordningsförbund.
    Samordningsforbund,
}
