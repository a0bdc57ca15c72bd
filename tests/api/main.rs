//! One integration test binary: the real gateway over mTLS with real
//! recipients and a real database (STYLE.md "Tests").

mod harness;

mod foundation;
