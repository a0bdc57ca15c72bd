//! The subject of an exchange: the personnummer (parsed once, printed
//! redacted), its per-domain pseudonyms, and the vault that seals it.

pub mod personnummer;
pub mod pseudonym;
pub mod vault;
