//! The C2SP signed-note / tlog-checkpoint parser (DESIGN §9): raw notes
//! against the audit key, and fuzzed bodies signed with that key so that the
//! body parser behind the signature check is reached. Also the verifier key
//! string parser.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};
use samgate::audit::checkpoint::{self, Checkpoint};
use std::sync::OnceLock;

const NAME: &str = "samgate/fuzz";

fn key() -> &'static (Ed25519KeyPair, [u8; 32]) {
    static K: OnceLock<(Ed25519KeyPair, [u8; 32])> = OnceLock::new();
    K.get_or_init(|| {
        let kp = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("key");
        let mut pk = [0u8; 32];
        pk.copy_from_slice(kp.public_key().as_ref());
        (kp, pk)
    })
}

fuzz_target!(|data: &[u8]| {
    let (kp, pk) = key();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = checkpoint::parse_verifier_key(text);
    if let Ok(c) = Checkpoint::open(text, NAME, pk) {
        assert_eq!(c.origin, NAME);
    }
    // The same text as a body, signed the way signed-note specifies.
    let mut sig = checkpoint::key_hash(NAME, pk).to_vec();
    sig.extend_from_slice(kp.sign(text.as_bytes()).as_ref());
    let note = format!(
        "{text}\n\u{2014} {NAME} {}\n",
        base64::engine::general_purpose::STANDARD.encode(sig)
    );
    if let Ok(c) = Checkpoint::open(&note, NAME, pk) {
        assert_eq!(c.origin, NAME);
        assert_eq!(c.body(), text, "a parsed body must render back to itself");
    }
});
