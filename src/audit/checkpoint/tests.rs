//! Checkpoint tests, including the signed-note vectors of Go's `golang.org/x/mod/sumdb/note`.

use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;

/// A test signer on a ring key pair.
struct TestSigner {
    name: String,
    pair: Ed25519KeyPair,
}

impl TestSigner {
    fn from_seed(name: &str, seed: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            pair: Ed25519KeyPair::from_seed_unchecked(seed).unwrap(),
        }
    }
}

impl NoteSigner for TestSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.pair.public_key().as_ref().try_into().unwrap()
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.pair.sign(msg).as_ref().try_into().unwrap()
    }
}

const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const PETER_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter() -> TestSigner {
    let typed = STANDARD.decode(PETER_SKEY_B64).unwrap();
    assert_eq!(typed[0], ALG_ED25519);
    TestSigner::from_seed("PeterNeumann", &typed[1..])
}

fn log_signer(seed_byte: u8) -> TestSigner {
    TestSigner::from_seed("samgate/demo", &[seed_byte; 32])
}

fn root() -> Hash {
    hex::decode("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn key_hash_and_vkey_match_the_go_reference() {
    let signer = peter();
    let (name, key) = parse_verifier_key(PETER_VKEY).unwrap();
    assert_eq!(name, "PeterNeumann");
    assert_eq!(key, signer.public_key());
    assert_eq!(hex::encode(key_hash(&name, &key)), "c74f20a3");
    assert_eq!(verifier_key_string(&name, &key), PETER_VKEY);
}

#[test]
fn signing_matches_the_go_reference_note_byte_for_byte() {
    let note = sign_note(GO_TEXT, &peter()).unwrap();
    assert_eq!(note, format!("{GO_TEXT}\n{PETER_SIG}"));
}

#[test]
fn the_go_reference_notes_open() {
    let (peter_name, peter_key) = parse_verifier_key(PETER_VKEY).unwrap();
    let (enoch_name, enoch_key) = parse_verifier_key(ENOCH_VKEY).unwrap();
    let single = format!("{GO_TEXT}\n{PETER_SIG}");
    assert_eq!(open_note(&single, &peter_name, &peter_key), Ok(GO_TEXT));
    assert_eq!(
        open_note(&single, &enoch_name, &enoch_key),
        Err(CheckpointError::NoSignatureForKey)
    );
    let double = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(open_note(&double, &peter_name, &peter_key), Ok(GO_TEXT));
    assert_eq!(open_note(&double, &enoch_name, &enoch_key), Ok(GO_TEXT));
}

#[test]
fn body_is_the_three_checkpoint_lines() {
    let checkpoint = Checkpoint::new("demo", 8, root());
    assert_eq!(checkpoint.origin, "samgate/demo");
    assert_eq!(
        checkpoint.body(),
        "samgate/demo\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    );
}

#[test]
fn a_signed_checkpoint_opens_with_its_key() {
    let signer = log_signer(1);
    let checkpoint = Checkpoint::new("demo", 8, root());
    let note = checkpoint.sign(&signer).unwrap();
    assert!(note.starts_with(&checkpoint.body()));
    assert!(note.contains("\n\n\u{2014} samgate/demo "));
    let opened = Checkpoint::open(&note, "samgate/demo", &signer.public_key()).unwrap();
    assert_eq!(opened, checkpoint);
    // The empty tree has a checkpoint too.
    let empty = Checkpoint::new("demo", 0, crate::audit::merkle::empty_root());
    let note = empty.sign(&signer).unwrap();
    assert_eq!(
        Checkpoint::open(&note, "samgate/demo", &signer.public_key()),
        Ok(empty)
    );
}

#[test]
fn fn_signer_adapts_a_signing_function() {
    let inner = log_signer(2);
    let signer = FnSigner {
        name: "samgate/demo".to_owned(),
        public_key: inner.public_key(),
        sign: |msg: &[u8]| inner.sign(msg),
    };
    let checkpoint = Checkpoint::new("demo", 3, root());
    let note = checkpoint.sign(&signer).unwrap();
    assert_eq!(note, checkpoint.sign(&inner).unwrap());
}

#[test]
fn tampered_checkpoints_fail_the_signature() {
    let signer = log_signer(1);
    let key = signer.public_key();
    let note = Checkpoint::new("demo", 8, root()).sign(&signer).unwrap();
    let root_b64 = STANDARD.encode(root());
    let mut other_root = root();
    other_root[31] ^= 1;
    let tampered = [
        note.replacen("\n8\n", "\n9\n", 1),
        note.replacen(&root_b64, &STANDARD.encode(other_root), 1),
        note.replacen("samgate/demo\n", "samgate/dem0\n", 1),
    ];
    for t in tampered {
        assert_ne!(t, note);
        assert_eq!(
            Checkpoint::open(&t, "samgate/demo", &key),
            Err(CheckpointError::BadSignature)
        );
    }
}

#[test]
fn another_key_does_not_count() {
    let ours = log_signer(1);
    let theirs = log_signer(2);
    let checkpoint = Checkpoint::new("demo", 8, root());
    let by_them = checkpoint.sign(&theirs).unwrap();
    assert_eq!(
        Checkpoint::open(&by_them, "samgate/demo", &ours.public_key()),
        Err(CheckpointError::NoSignatureForKey)
    );
    // Their signature under our key hash is tried and refused.
    let mut forged = STANDARD
        .decode(by_them.rsplit(' ').next().unwrap().trim_end())
        .unwrap();
    forged[..4].copy_from_slice(&key_hash("samgate/demo", &ours.public_key()));
    let forged_note = format!(
        "{}\n\u{2014} samgate/demo {}\n",
        checkpoint.body(),
        STANDARD.encode(forged)
    );
    assert_eq!(
        Checkpoint::open(&forged_note, "samgate/demo", &ours.public_key()),
        Err(CheckpointError::BadSignature)
    );
    // A wrong key name finds nothing either.
    let by_us = checkpoint.sign(&ours).unwrap();
    assert_eq!(
        Checkpoint::open(&by_us, "samgate/other", &ours.public_key()),
        Err(CheckpointError::NoSignatureForKey)
    );
}

#[test]
fn truncated_and_unsigned_notes_fail() {
    let signer = log_signer(1);
    let key = signer.public_key();
    let checkpoint = Checkpoint::new("demo", 8, root());
    let note = checkpoint.sign(&signer).unwrap();
    let open = |n: &str| Checkpoint::open(n, "samgate/demo", &key);
    assert!(matches!(
        open(&note[..note.len() - 1]),
        Err(CheckpointError::Malformed { .. })
    ));
    assert!(matches!(
        open(&note[..note.len() - 10]),
        Err(CheckpointError::Malformed { .. })
    ));
    assert_eq!(open(&checkpoint.body()), Err(CheckpointError::Unsigned));
    assert_eq!(
        open(&format!("{}\n", checkpoint.body())),
        Err(CheckpointError::Unsigned)
    );
    assert_eq!(open(""), Err(CheckpointError::Unsigned));
}

#[test]
fn malformed_signature_blocks_fail() {
    let signer = log_signer(1);
    let key = signer.public_key();
    let note = Checkpoint::new("demo", 8, root()).sign(&signer).unwrap();
    let open = |n: &str| Checkpoint::open(n, "samgate/demo", &key);
    let ascii_dash = note.replacen('\u{2014}', "-", 1);
    assert!(matches!(
        open(&ascii_dash),
        Err(CheckpointError::Malformed { .. })
    ));
    let control = note.replacen("samgate/demo\n", "samgate/demo\r\n", 1);
    assert!(matches!(
        open(&control),
        Err(CheckpointError::Malformed { .. })
    ));
    let bad_b64 = format!("{note}\u{2014} someone !!!\n");
    assert!(matches!(
        open(&bad_b64),
        Err(CheckpointError::Malformed { .. })
    ));
    // Lines of unknown keys are ignored ...
    let unknown = format!("{note}\u{2014} someone {}\n", STANDARD.encode([9u8; 68]));
    assert!(open(&unknown).is_ok());
    // ... up to the signature limit.
    let many = format!(
        "{note}{}",
        format!("\u{2014} someone {}\n", STANDARD.encode([9u8; 68])).repeat(MAX_SIGNATURES)
    );
    assert_eq!(open(&many), Err(CheckpointError::TooManySignatures));
}

#[test]
fn signed_bodies_are_parsed_strictly() {
    let signer = log_signer(1);
    let key = signer.public_key();
    let root_b64 = STANDARD.encode(root());
    let bad_bodies = [
        format!("samgate/demo\n08\n{root_b64}\n"),
        format!("samgate/demo\n+8\n{root_b64}\n"),
        format!("samgate/demo\n18446744073709551616\n{root_b64}\n"),
        format!("samgate/demo\n8\n{root_b64}\nextension\n"),
        "samgate/demo\n8\n".to_owned(),
        format!("samgate/demo\n8\n{}\n", STANDARD.encode([1u8; 31])),
        format!("samgate/demo\n8\n{}\n", root_b64.trim_end_matches('=')),
        format!("\n8\n{root_b64}\n"),
    ];
    for body in bad_bodies {
        let note = sign_note(&body, &signer).unwrap();
        assert!(
            matches!(
                Checkpoint::open(&note, "samgate/demo", &key),
                Err(CheckpointError::BadBody { .. })
            ),
            "{body:?}"
        );
    }
    let max = format!("samgate/demo\n{}\n{root_b64}\n", u64::MAX);
    let note = sign_note(&max, &signer).unwrap();
    assert_eq!(
        Checkpoint::open(&note, "samgate/demo", &key).map(|c| c.tree_size),
        Ok(u64::MAX)
    );
}

#[test]
fn origin_must_match_the_key_name() {
    let signer = log_signer(1);
    let other_origin = Checkpoint::new("other", 8, root());
    assert_eq!(
        other_origin.sign(&signer),
        Err(CheckpointError::OriginMismatch)
    );
    let note = sign_note(&other_origin.body(), &signer).unwrap();
    assert_eq!(
        Checkpoint::open(&note, "samgate/demo", &signer.public_key()),
        Err(CheckpointError::OriginMismatch)
    );
    let spaced = TestSigner::from_seed("samgate/a b", &[1; 32]);
    assert_eq!(
        Checkpoint::new("a b", 1, root()).sign(&spaced),
        Err(CheckpointError::InvalidName)
    );
}

#[test]
fn verifier_keys_round_trip_and_reject_garbage() {
    let signer = log_signer(3);
    let vkey = verifier_key_string("samgate/demo", &signer.public_key());
    assert_eq!(
        parse_verifier_key(&vkey),
        Ok(("samgate/demo".to_owned(), signer.public_key()))
    );
    let bad = [
        "samgate/demo",
        "samgate/demo+zz+AQ==",
        &vkey.replacen("samgate/demo+", "samgate/other+", 1),
        &PETER_VKEY.replacen("+ARpc", "+AhpC", 1),
    ];
    for v in bad {
        assert!(
            matches!(
                parse_verifier_key(v),
                Err(CheckpointError::BadVerifierKey { .. })
            ),
            "{v}"
        );
    }
    assert_eq!(
        parse_verifier_key("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(CheckpointError::InvalidName)
    );
}
