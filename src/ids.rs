//! Ids as types (STYLE.md "Naming"): an exchange id and a consent id are
//! not interchangeable strings. Each reads as its text (`Deref<str>`,
//! `Display`) and serialises as it, exactly as the plain strings did.

use std::fmt;
use std::ops::Deref;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<$name> for serde_json::Value {
            fn from(id: $name) -> serde_json::Value {
                serde_json::Value::String(id.0)
            }
        }
    };
}

string_id!(
    /// The id of one exchange (a UUID v7): stable across retries and
    /// deliveries, in the body and the `Samgate-Exchange-Id` header.
    ExchangeId
);

string_id!(
    /// The id of a recorded consent (the token's `jti`, a UUID).
    ConsentId
);

impl ExchangeId {
    /// A fresh exchange id.
    pub fn new() -> ExchangeId {
        ExchangeId(uuid::Uuid::now_v7().to_string())
    }
}

impl Default for ExchangeId {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsentId {
    /// The id of the consent stored as `id` (ids are checked when the
    /// consent is verified, before it is stored).
    pub fn stored(id: &str) -> ConsentId {
        ConsentId(id.to_owned())
    }
}
