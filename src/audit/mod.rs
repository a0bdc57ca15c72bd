//! The tamper-evident audit log (DESIGN §6).

pub mod checkpoint;
pub mod merkle;
pub mod proof;
