//! The tamper-evident audit log (DESIGN §6): records, the group-commit
//! writer, the Merkle tree, signed checkpoints, proofs, the auditor API,
//! disclosures and offline verification.

pub mod access;
pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod cosign;
pub mod disclosure;
pub mod disclosure_proofs;
pub mod error;
pub mod export;
pub mod log;
pub mod merkle;
pub mod proof;
pub mod query;
pub mod record;
pub mod verify;
