//! The tamper-evident audit log (DESIGN §6): records, the group-commit
//! writer, the Merkle tree, signed checkpoints, proofs and verification.

pub mod checkpoint;
pub mod cli;
pub mod log;
pub mod merkle;
pub mod proof;
pub mod record;
