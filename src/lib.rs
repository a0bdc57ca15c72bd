//! samgate: a consent-aware data exchange gateway for Swedish rehabilitation
//! cooperation (samverkan). See `../shared/DESIGN.md` for the contract and
//! `docs/architecture.md` for how the modules fit together.

pub mod audit;
pub mod init;
pub mod personnummer;
pub mod pki;
pub mod policy;
pub mod pseudonym;
pub mod schema;
pub mod vault;
pub mod keys;
