//! Consent (DESIGN §2).
pub mod cli;
pub mod token;
