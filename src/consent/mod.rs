//! Consent (DESIGN §2): verification of signed consent tokens, the stored
//! model and the consent check, the HTTP API, and the signing CLI.

pub mod api;
pub mod cli;
pub mod model;
pub mod token;
pub mod verify;
