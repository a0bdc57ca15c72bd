//! Verifier tests on in-memory logs: a good log with several heads, and
//! each kind of damage named by seq.

use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;
use crate::audit::checkpoint::FnSigner;
use crate::audit::record::{Action, Decision};

const ORIGIN: &str = "samgate/test";

fn pair() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap()
}

fn public(p: &Ed25519KeyPair) -> [u8; 32] {
    p.public_key().as_ref().try_into().unwrap()
}

fn leaves(n: u64) -> Vec<Vec<u8>> {
    (1..=n)
        .map(|seq| {
            AuditRecord {
                seq,
                time: "2026-01-02T03:04:05.000006Z".into(),
                ..AuditRecord::new(Action::AuditQuery, Decision::Permit)
            }
            .leaf_bytes()
        })
        .collect()
}

fn head(p: &Ed25519KeyPair, leaves: &[Vec<u8>], size: u64) -> SignedHead {
    let hashes: Vec<Hash> = leaves[..size as usize]
        .iter()
        .map(|l| merkle::leaf_hash(l))
        .collect();
    let root = merkle::root_from_leaves(&hashes);
    let signer = FnSigner {
        name: ORIGIN.to_owned(),
        public_key: public(p),
        sign: |m: &[u8]| p.sign(m).as_ref().try_into().unwrap(),
    };
    let checkpoint = Checkpoint {
        origin: ORIGIN.into(),
        tree_size: size,
        root_hash: root,
    }
    .sign(&signer)
    .unwrap();
    SignedHead {
        tree_size: size,
        root_hash: root,
        checkpoint,
    }
}

fn export_entry(seq: u64, leaf: &[u8]) -> Entry {
    let Value::Object(view) = serde_json::from_slice(leaf).unwrap() else {
        panic!("not an object")
    };
    Entry {
        seq,
        leaf: leaf.to_vec(),
        source: Source::Export {
            view,
            leaf_hash: Some(hex::encode(merkle::leaf_hash(leaf))),
        },
    }
}

fn run(heads: Vec<SignedHead>, entries: Vec<Entry>) -> Result<Summary, Failure> {
    let mut v = Verifier::new(None, public(&pair()), heads)?;
    for e in entries {
        v.push(e)?;
    }
    v.finish()
}

#[test]
fn a_good_log_with_several_heads_verifies() {
    let p = pair();
    let l = leaves(13);
    let heads = vec![
        head(&p, &l, 0),
        head(&p, &l, 5),
        head(&p, &l, 8),
        head(&p, &l, 13),
    ];
    let entries = l
        .iter()
        .enumerate()
        .map(|(i, x)| export_entry(i as u64 + 1, x))
        .collect();
    let s = run(heads, entries).unwrap();
    assert_eq!((s.records, s.signed_size), (13, 13));
    let hashes: Vec<Hash> = l.iter().map(|x| merkle::leaf_hash(x)).collect();
    assert_eq!(s.root, merkle::root_from_leaves(&hashes));
}

#[test]
fn a_gap_a_repeat_and_a_wrong_seq_are_named() {
    let p = pair();
    let l = leaves(6);
    let mut entries: Vec<Entry> = l
        .iter()
        .enumerate()
        .map(|(i, x)| export_entry(i as u64 + 1, x))
        .collect();
    entries.remove(3);
    let f = run(vec![head(&p, &l, 6)], entries).unwrap_err();
    assert_eq!(f.to_string(), "seq 4: missing (the next record is seq 5)");

    let mut entries: Vec<Entry> = l
        .iter()
        .enumerate()
        .map(|(i, x)| export_entry(i as u64 + 1, x))
        .collect();
    entries[2] = export_entry(3, &l[3]);
    assert_eq!(run(vec![], entries).unwrap_err().seq, 3);
}

#[test]
fn a_head_beyond_the_log_means_missing_records() {
    let p = pair();
    let l = leaves(6);
    let entries = l[..4]
        .iter()
        .enumerate()
        .map(|(i, x)| export_entry(i as u64 + 1, x))
        .collect();
    let f = run(vec![head(&p, &l, 6)], entries).unwrap_err();
    assert_eq!(
        f.to_string(),
        "seq 5: missing (signed tree head covers 6 records)"
    );
}

#[test]
fn a_head_by_another_key_or_with_another_root_fails() {
    let other = Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).unwrap();
    let l = leaves(4);
    let entries = |l: &[Vec<u8>]| {
        l.iter()
            .enumerate()
            .map(|(i, x)| export_entry(i as u64 + 1, x))
            .collect()
    };
    let f = run(vec![head(&other, &l, 4)], entries(&l)).unwrap_err();
    assert!(f.reason.contains("does not verify"), "{f}");
    // A head over different leaves: the root does not match.
    let mut changed = l.clone();
    changed[1] = AuditRecord {
        reason: Some("x".into()),
        ..AuditRecord::from_leaf(&changed[1]).unwrap()
    }
    .leaf_bytes();
    let f = run(vec![head(&pair(), &changed, 4)], entries(&l)).unwrap_err();
    assert_eq!(f.seq, 1);
    assert!(f.reason.contains("does not match"), "{f}");
}

#[test]
fn database_columns_and_nodes_are_compared_with_the_leaf() {
    let l = leaves(2);
    let r = AuditRecord::from_leaf(&l[0]).unwrap();
    let columns = Columns {
        time_us: crate::clock::to_us(
            time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
                .unwrap(),
        ),
        action: r.action.to_string(),
        decision: r.decision.to_string(),
        ..Columns::default()
    };
    let entry = |columns: Columns, node: Option<Hash>| Entry {
        seq: 1,
        leaf: l[0].clone(),
        source: Source::Database {
            columns: Box::new(columns),
            node,
        },
    };
    let good = merkle::leaf_hash(&l[0]);
    assert!(run(vec![], vec![entry(columns.clone(), Some(good))]).is_ok());
    let bad = Columns {
        decision: "deny".into(),
        ..columns.clone()
    };
    assert!(run(vec![], vec![entry(bad, Some(good))])
        .unwrap_err()
        .reason
        .contains("`decision`"));
    let late = Columns {
        time_us: columns.time_us + 1,
        ..columns.clone()
    };
    assert!(run(vec![], vec![entry(late, Some(good))])
        .unwrap_err()
        .reason
        .contains("`time_us`"));
    assert!(run(vec![], vec![entry(columns.clone(), None)]).is_err());
    assert!(run(vec![], vec![entry(columns, Some([0u8; 32]))]).is_err());
}

/// A leaf naming an action this build does not know (a newer gateway's, or
/// a forged one) fails verification with a reason, not a panic, and the
/// reason does not quote the name.
#[test]
fn an_unknown_action_or_decision_is_named_as_such() {
    let l = leaves(2);
    let text = String::from_utf8(l[1].clone()).unwrap();
    for (from, to, what) in [
        ("\"audit-query\"", "\"teleported\"", "action"),
        ("\"permit\"", "\"maybe\"", "decision"),
    ] {
        let forged = text.replace(from, to).into_bytes();
        let entries = vec![export_entry(1, &l[0]), export_entry(2, &forged)];
        let f = run(vec![], entries).unwrap_err();
        assert_eq!(f.seq, 2);
        assert_eq!(
            f.reason,
            format!("the leaf's {what} is not one this verifier knows")
        );
    }
    let garbage = export_entry(1, br#"{"seq":1}"#);
    assert_eq!(
        run(vec![], vec![garbage]).unwrap_err().reason,
        "the leaf is not a valid audit record"
    );
}
