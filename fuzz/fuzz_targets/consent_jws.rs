//! The consent JWS parser and its claims (DESIGN §2, §9). The first byte
//! picks the mode: a raw token (header, algorithm and signature checks), or
//! the rest as a claims object signed with the real issuer key, so that the
//! claim checks behind the signature are reached.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use samgate::consent::token::SigningKeyFile;
use samgate::consent::verify::ConsentVerifier;
use std::sync::OnceLock;

struct Setup {
    verifier: ConsentVerifier,
    key: SigningKeyFile,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let f = common::fixture();
        Setup {
            verifier: ConsentVerifier::from_config(&f.config).expect("verifier"),
            key: SigningKeyFile::load(&f.dir().join("keys/issuer-sfk-kalmar-intake.pem"))
                .expect("issuer key"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let now = time::OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("time");
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
            return;
        };
        let kid = if mode % 4 == 1 { "2026-1" } else { "other" };
        match s.key.sign(kid, &claims) {
            Ok(t) => t,
            Err(_) => return,
        }
    };
    if let Err(e) = s.verifier.verify(&token, now) {
        // Every refusal is one of the consent codes of DESIGN §5, as the
        // one error mapping (src/error.rs) answers it.
        let code = samgate::error::ApiError::from(e).code.as_str();
        assert!(
            [
                "consent_signature",
                "unknown_issuer",
                "invalid_consent_claims",
                "invalid_personnummer"
            ]
            .contains(&code),
            "unexpected code {code}"
        );
    }
});
