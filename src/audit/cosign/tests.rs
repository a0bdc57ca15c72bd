//! Cosignature tests: the C2SP `tlog-cosignature` example line, and a vector produced by an
//! independent implementation (Python `cryptography`, the message and key id assembled by
//! hand from the spec) for the seed 0x42 x 32.

use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;
use crate::audit::checkpoint::NoteSigner;

/// The checkpoint body of the C2SP examples.
const BODY: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
/// The cosignature line of the C2SP `tlog-cosignature` example (key unknown).
const SPEC_LINE: &str = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
/// The independent vector: vkey and line for seed 0x42 x 32 at time 1679315147.
const PY_VKEY: &str = "witness.example/w1+f1ed8c47+BCFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS";
const PY_LINE: &str = "\u{2014} witness.example/w1 8e2MRwAAAABkGFDLEqgtDUsneMqeLcGMqk8Xx08OQIVxF72ZJmEtUU5sbo5WiTljN+UF1cQ+vSoh1gRQ0wV3Nz9m8DFvjwHDTDcQBA==";
const TS: u64 = 1_679_315_147;

fn pair(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn key(name: &str, p: &Ed25519KeyPair) -> WitnessKey {
    WitnessKey::new(name, p.public_key().as_ref().try_into().unwrap()).unwrap()
}

fn sign_with(p: &Ed25519KeyPair) -> impl Fn(&[u8]) -> [u8; 64] + '_ {
    move |m| p.sign(m).as_ref().try_into().unwrap()
}

#[test]
fn the_spec_example_line_parses_with_its_timestamp() {
    let line = parse_signature_line(SPEC_LINE).unwrap();
    assert_eq!(line.name, "witness.example.com/w1");
    assert_eq!(line.bytes.len(), 76);
    assert_eq!(hex::encode(&line.bytes[..4]), "8d66cf3f");
    let ts = u64::from_be_bytes(line.bytes[4..12].try_into().unwrap());
    assert_eq!(ts, TS, "the example's `time 1679315147` line");
}

#[test]
fn signing_reproduces_the_independent_vector() {
    let p = pair(0x42);
    let k = key("witness.example/w1", &p);
    assert_eq!(k.to_vkey(), PY_VKEY);
    assert_eq!(WitnessKey::parse_vkey(PY_VKEY).unwrap(), k);
    let line = cosign(BODY, &k.name, &k.public_key, TS, sign_with(&p)).unwrap();
    assert_eq!(line, format!("{PY_LINE}\n"));
    let parsed = parse_signature_line(PY_LINE).unwrap();
    assert_eq!(verify_line(BODY, &parsed, &k).unwrap(), TS);
}

#[test]
fn a_changed_body_timestamp_or_key_is_refused() {
    let p = pair(0x42);
    let k = key("witness.example/w1", &p);
    let parsed = parse_signature_line(PY_LINE).unwrap();
    let other_body = BODY.replace("20852163", "20852164");
    assert_eq!(
        verify_line(&other_body, &parsed, &k),
        Err(CosignError::BadSignature(k.name.clone()))
    );
    let mut later = parsed.clone();
    later.bytes[11] ^= 1;
    assert!(matches!(
        verify_line(BODY, &later, &k),
        Err(CosignError::BadSignature(_))
    ));
    // Another key under the same name has another key id: not this witness's line.
    let k2 = key("witness.example/w1", &pair(0x43));
    assert_eq!(verify_line(BODY, &parsed, &k2), Err(CosignError::OtherKey));
    let renamed = WitnessKey::new("witness.example/w2", k.public_key).unwrap();
    assert_eq!(
        verify_line(BODY, &parsed, &renamed),
        Err(CosignError::OtherKey)
    );
}

#[test]
fn vkeys_of_other_types_or_with_a_wrong_id_are_refused() {
    // A signed-note (0x01) key is not a cosignature key.
    assert!(WitnessKey::parse_vkey(
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    )
    .is_err());
    assert!(WitnessKey::parse_vkey(&PY_VKEY.replace("f1ed8c47", "f1ed8c48")).is_err());
    assert!(WitnessKey::parse_vkey("no-plus-signs").is_err());
    assert_eq!(
        WitnessKey::new("has space", [0; 32]),
        Err(CosignError::InvalidName)
    );
}

struct LogSigner(Ed25519KeyPair);
impl NoteSigner for LogSigner {
    fn name(&self) -> &str {
        "samgate/test"
    }
    fn public_key(&self) -> [u8; 32] {
        self.0.public_key().as_ref().try_into().unwrap()
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).as_ref().try_into().unwrap()
    }
}

#[test]
fn a_quorum_of_cosignatures_opens_and_the_log_signature_still_counts() {
    let log = LogSigner(pair(1));
    let cp = Checkpoint::new("test", 7, [9u8; 32]);
    let note = cp.sign(&log).unwrap();
    let (w1, w2, w3) = (pair(11), pair(12), pair(13));
    let keys = [key("w1", &w1), key("w2", &w2), key("w3", &w3)];
    let body = cp.body();
    let l1 = cosign(&body, "w1", &keys[0].public_key, 100, sign_with(&w1)).unwrap();
    let l2 = cosign(&body, "w2", &keys[1].public_key, 101, sign_with(&w2)).unwrap();
    let cosigned = append_lines(&note, [l1.as_str(), l2.as_str(), l1.as_str()]);
    assert_eq!(
        cosigned.matches('\u{2014}').count(),
        3,
        "duplicates are skipped"
    );
    // The log's own verifier still accepts the note with the extra lines.
    assert_eq!(
        Checkpoint::open(&cosigned, "samgate/test", &log.public_key()).unwrap(),
        cp
    );
    let (opened, found) =
        open_cosigned(&cosigned, "samgate/test", &log.public_key(), &keys, 2).unwrap();
    assert_eq!(opened, cp);
    let names: Vec<_> = found.iter().map(|c| c.witness.as_str()).collect();
    assert_eq!(names, ["w1", "w2"]);
    assert_eq!(found[1].timestamp, 101);
    assert_eq!(
        open_cosigned(&cosigned, "samgate/test", &log.public_key(), &keys, 3),
        Err(CosignError::Quorum {
            valid: 2,
            required: 3
        })
    );
    // A tampered cosignature of a known witness is an error, not just "missing".
    let bad = cosigned.replacen(&l2[l2.len() - 10..l2.len() - 1], "AAAAAAAAA", 1);
    assert!(open_cosigned(&bad, "samgate/test", &log.public_key(), &keys, 1).is_err());
}
