//! One integration test binary: the real gateway over mTLS with real
//! recipients and a real database (STYLE.md "Tests").

// Test support code: a failed unwrap is a failed test, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod harness;

mod audit;
mod audit_proofs;
mod audit_verify;
mod cli;
mod consent;
mod console;
mod crash;
mod edges;
mod exchange;
mod foundation;
mod lifecycle;
mod network;
mod openapi;
mod ops;
mod routes;
mod scale;
mod witness;
