//! Consent (DESIGN §2): verification of signed consent tokens, the stored
//! model and the consent check, the HTTP API, and the signing CLI.

pub mod api;
pub mod cache;
pub mod cli;
pub mod lifecycle;
pub mod model;
pub mod notices;
pub mod receipt;
pub mod token;
pub mod verify;
