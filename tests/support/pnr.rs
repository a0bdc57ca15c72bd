//! The textual forms of a personnummer that a PII scan looks for, shared by
//! the test binaries (tests/api and tests/demo.rs).

/// Every textual form of a personnummer (10 and 12 digits, with and without
/// separator), for scanning logs, responses and database files.
pub fn pnr_forms(canonical12: &str) -> Vec<String> {
    let short = &canonical12[2..];
    vec![
        canonical12.to_owned(),
        format!("{}-{}", &canonical12[..8], &canonical12[8..]),
        short.to_owned(),
        format!("{}-{}", &short[..6], &short[6..]),
    ]
}
