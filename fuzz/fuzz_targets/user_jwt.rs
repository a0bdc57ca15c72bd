//! The user JWT path (DESIGN §1, §9): raw tokens, and fuzzed claims signed
//! with the real user-token issuer key so the claim checks are reached.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use samgate::auth::jwt::{PublicKeyFile, UserTokenVerifier};
use samgate::consent::token::SigningKeyFile;
use std::sync::OnceLock;

struct Setup {
    verifier: UserTokenVerifier,
    key: SigningKeyFile,
    kid: String,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let f = common::fixture();
        let public = PublicKeyFile::load(&f.dir().join("keys/users-sfk-kalmar-audit.pub.pem"))
            .expect("public key");
        let verifier = UserTokenVerifier::new("sfk-kalmar-audit-users", "samgate", &public, None)
            .expect("verifier");
        Setup {
            verifier,
            key: SigningKeyFile::load(&f.dir().join("keys/users-sfk-kalmar-audit.pem"))
                .expect("key"),
            kid: public.key_id(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
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
        match s.key.sign(&s.kid, &claims) {
            Ok(t) => t,
            Err(_) => return,
        }
    };
    let today = time::macros::date!(2026 - 06 - 01);
    if let Ok(user) = s.verifier.verify(&token, today) {
        assert!(!user.is_empty(), "an empty user was accepted");
    }
});
