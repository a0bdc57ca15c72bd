//! Routes (DESIGN §4): which sender may send which message type to which
//! recipient for which purpose, and the one lookup rule used both forward
//! (an exchange) and in reverse (a reply travelling back).

use serde::{Deserialize, Serialize};

use super::SubjectMode;
use crate::party::PartyId;

/// Whether a route needs the participant's consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentRequirement {
    /// The default: an active consent must cover the exchange.
    #[default]
    Required,
    /// Only allowed for `statistics-report` (aggregate data, no subject).
    NotRequired,
}

/// `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Senders.
    pub from: Vec<PartyId>,
    /// Recipients.
    pub to: Vec<PartyId>,
    /// Message type.
    pub msg_type: String,
    /// Allowed purposes.
    pub purposes: Vec<String>,
    /// Allow-list of top-level JSON pointers, or `*`.
    pub fields: Vec<String>,
    /// How the subject identifier travels.
    pub subject: SubjectMode,
    /// Whether consent is needed.
    pub consent: ConsentRequirement,
}

/// The route for (from, to, type, purpose), if any. The one rule, forward
/// and in reverse: a reply travels back on the route found with the parties
/// swapped and the forward exchange's purpose (DESIGN §10).
pub fn find<'a>(
    routes: &'a [RouteConfig],
    from: &PartyId,
    to: &PartyId,
    msg_type: &str,
    purpose: &str,
) -> Option<&'a RouteConfig> {
    routes.iter().find(|r| {
        r.msg_type == msg_type
            && r.from.contains(from)
            && r.to.contains(to)
            && r.purposes.iter().any(|p| p == purpose)
    })
}
