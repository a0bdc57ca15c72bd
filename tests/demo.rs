//! `samgate demo` end to end: the binary runs the whole story in a temporary
//! directory, exits 0, shows deliveries, withheld fields, the revocation
//! denial and the audit verification, and never prints a personnummer.

use std::process::Command;

/// The demo personas (DOMAIN §7) in canonical form.
const PERSONAS: [&str; 4] = [
    "200203149828",
    "200011029915",
    "198209239865",
    "199905679933",
];

#[path = "support/pnr.rs"]
mod pnr;

/// The 12- and 10-digit forms, with and without separator (`-` and `+`).
fn forms(n: &str) -> Vec<String> {
    let mut all = pnr::pnr_forms(n);
    all.push(format!("{}+{}", &n[2..8], &n[8..]));
    all
}

#[test]
fn demo_runs_the_story_and_verifies_the_audit_log() {
    let output = Command::new(env!("CARGO_BIN_EXE_samgate"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("run samgate demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "samgate demo exited {:?}\n{stdout}\n{stderr}",
        output.status.code()
    );

    for n in PERSONAS {
        for f in forms(n) {
            assert!(!stdout.contains(&f), "stdout contains a personnummer form");
            assert!(!stderr.contains(&f), "stderr contains a personnummer form");
        }
    }
    assert!(stdout.contains("20020314-****"), "the masked form is shown");
    assert!(!stdout.contains("\x1b["), "no colour when piped");
    assert!(
        stdout.contains("recorded  consent"),
        "consents are recorded"
    );
    assert!(
        stdout.contains("revoked  consent"),
        "Nils's consent is revoked"
    );

    assert!(!stdout.contains("not available yet"), "{stdout}");
    assert!(stdout.contains("delivered  exchange"), "{stdout}");
    assert!(stdout.contains("sfk-kalmar received: subject personnummer 20020314-****"));
    assert!(
        stdout.contains("subject pseudonym ps1_"),
        "the plan to the region"
    );
    assert!(stdout.contains("withheld /"), "withheld fields are listed");
    assert!(stdout.contains("reply  sfk-kalmar → fk: referral: decision accepted"));
    assert!(stdout.contains("denied  403 consent_revoked"), "{stdout}");
    assert!(stdout.contains("denied  403 route_not_allowed"));
    assert!(stdout.contains("denied  403 consent_missing"));
    assert!(stdout.contains("verified  audit log: "), "{stdout}");
    assert!(
        stdout.contains("recomputed  here too: the root"),
        "{stdout}"
    );
    assert!(stdout.contains("matches the signed tree head"));
    assert!(stdout.contains("included  seq "), "{stdout}");
    assert!(
        stdout.contains("messages about Alva (20020314-****)"),
        "{stdout}"
    );
    assert!(!stdout.contains("unexpected"), "{stdout}");
}
