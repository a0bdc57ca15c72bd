//! Register extracts a participant can keep (DESIGN §12): `POST /v1/disclosures` with
//! `"proofs": true` adds to each item its audit record's `seq` and `leaf` (standard base64
//! of the leaf bytes), an `inclusion_proof` `{leaf_index, tree_size, hashes}` and the
//! `checkpoint` of that tree with the witnesses' cosignature lines; and
//! `samgate audit verify --disclosure FILE` checks such an extract offline.
//!
//! The offline check, per item: the leaf is a canonical audit record; every other field of
//! the item is the same as in the leaf (so the readable lines cannot be changed apart from
//! the leaf), the extract's `subject` is the leaf's; the leaf is at `seq - 1` of the tree
//! by its inclusion proof; the checkpoint is signed by the audit key and, when witness keys
//! are given, carries the quorum of cosignatures.

use std::collections::HashSet;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::cosign::{self, WitnessKey};
use super::merkle::{self, Hash};
use super::proof;
use super::query;
use super::record::AuditRecord;
use super::verify::{Failure, VerifyError};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Fields an item with proofs has beyond the record's own (`reply`: a nested record).
const PROOF_FIELDS: [&str; 5] = ["seq", "leaf", "inclusion_proof", "checkpoint", "reply"];

/// Adds the proof fields to `items` (views of the records whose leaves are `leaves`), and
/// to an item's nested `reply` (another record) its own `seq`, `leaf` and
/// `inclusion_proof`. Signs a head covering them first and waits for its cosignatures.
pub async fn attach(state: &AppState, items: &mut [Value], leaves: &[Vec<u8>]) -> ApiResult<()> {
    let head = super::api::fresh_head(state).await?;
    state
        .witnesses
        .await_head(&state.store, head.tree_size)
        .await;
    let head_json = state.witnesses.head_json(&state.store, &head).await;
    let checkpoint = head_json.get("checkpoint").cloned().unwrap_or(Value::Null);
    let mut parsed = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        let record = AuditRecord::from_leaf(leaf)
            .map_err(|_| ApiError::internal("a stored audit leaf does not parse"))?;
        if record.seq == 0 || record.seq > head.tree_size {
            return Err(ApiError::internal(
                "a disclosed record is outside the signed tree",
            ));
        }
        let view: Value = serde_json::from_slice(leaf).map_err(ApiError::internal)?;
        parsed.push((record.seq, view, leaf));
    }
    // Which leaf each item (and each nested reply) shows.
    let mut targets: Vec<(usize, bool, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let main = matching(item, &parsed)
            .ok_or_else(|| ApiError::internal("a disclosure item matches no record"))?;
        targets.push((i, false, main));
        if let Some(reply) = item.get("reply") {
            let r = matching(reply, &parsed)
                .ok_or_else(|| ApiError::internal("a disclosure reply matches no record"))?;
            targets.push((i, true, r));
        }
    }
    let mut ids = HashSet::new();
    for (_, _, l) in &targets {
        let seq = parsed.get(*l).map_or(1, |p| p.0);
        ids.extend(
            proof::inclusion_proof_nodes(seq - 1, head.tree_size).map_err(ApiError::internal)?,
        );
    }
    let ids: Vec<_> = ids.into_iter().collect();
    let nodes = query::nodes(&state.store, &ids).await?;
    for (i, nested, l) in targets {
        let Some((seq, _, leaf)) = parsed.get(l) else {
            continue;
        };
        let hashes =
            proof::inclusion_proof(seq - 1, head.tree_size, &nodes).map_err(ApiError::internal)?;
        let Some(item) = items.get_mut(i) else {
            continue;
        };
        let target = if nested {
            item.get_mut("reply")
        } else {
            Some(item)
        };
        let Some(obj) = target.and_then(Value::as_object_mut) else {
            return Err(ApiError::internal("a disclosure item is not an object"));
        };
        obj.insert("seq".into(), Value::from(*seq));
        obj.insert("leaf".into(), Value::String(STANDARD.encode(leaf)));
        obj.insert(
            "inclusion_proof".into(),
            serde_json::json!({
                "leaf_index": seq - 1,
                "tree_size": head.tree_size,
                "hashes": hashes.iter().map(hex::encode).collect::<Vec<_>>(),
            }),
        );
        if !nested {
            obj.insert("checkpoint".into(), checkpoint.clone());
        }
    }
    Ok(())
}

/// The first leaf whose fields include every field of `view` (other than `reply`).
fn matching(view: &Value, parsed: &[(u64, Value, &Vec<u8>)]) -> Option<usize> {
    let fields = view.as_object()?;
    parsed.iter().position(|(_, leaf, _)| {
        fields
            .iter()
            .filter(|(k, _)| k.as_str() != "reply")
            .all(|(k, v)| leaf.get(k) == Some(v))
    })
}

/// A verified extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureSummary {
    /// Items verified.
    pub items: usize,
    /// Tree sizes of the checkpoints they are proven against.
    pub tree_sizes: Vec<u64>,
    /// Witnesses whose cosignatures were checked (distinct, sorted).
    pub cosigned_by: Vec<String>,
}

/// Verifies an extract saved from `POST /v1/disclosures` with `"proofs": true`.
pub fn verify_file(
    path: &Path,
    public_key: &[u8; 32],
    witnesses: &[WitnessKey],
    quorum: usize,
) -> Result<DisclosureSummary, VerifyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))?;
    let doc: Value = serde_json::from_str(&text).map_err(|_| {
        VerifyError::Failed(Failure {
            seq: 0,
            reason: "the extract is not valid JSON".into(),
        })
    })?;
    verify_value(&doc, public_key, witnesses, quorum).map_err(VerifyError::Failed)
}

/// [`verify_file`] on a parsed extract.
pub fn verify_value(
    doc: &Value,
    public_key: &[u8; 32],
    witnesses: &[WitnessKey],
    quorum: usize,
) -> Result<DisclosureSummary, Failure> {
    let bad = |seq: u64, reason: String| Failure { seq, reason };
    let Some(obj) = doc.as_object() else {
        return Err(bad(0, "the extract is not a JSON object".into()));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["subject", "disclosures"].contains(&k.as_str()))
    {
        return Err(bad(0, format!("unknown field `{k}` in the extract")));
    }
    let subject = obj.get("subject").cloned().unwrap_or(Value::Null);
    let items = obj
        .get("disclosures")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(0, "the extract has no `disclosures` list".into()))?;
    let mut sizes = Vec::new();
    let mut names = Vec::new();
    for item in items {
        let seq = item.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let fail = |reason: &str| bad(seq, reason.to_owned());
        let Some(fields) = item.as_object() else {
            return Err(fail("an item is not a JSON object"));
        };
        let note = fields
            .get("checkpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                fail("the item has no `checkpoint` (was the extract asked with \"proofs\": true?)")
            })?;
        let origin = note.split('\n').next().unwrap_or("");
        if !origin.starts_with(super::checkpoint::ORIGIN_PREFIX) {
            return Err(fail("the checkpoint is not of a samgate log"));
        }
        let (cp, found) = cosign::open_cosigned(note, origin, public_key, witnesses, quorum)
            .map_err(|e| bad(seq, format!("the checkpoint does not verify: {e}")))?;
        check_record(fields, &subject, &cp, true)?;
        if let Some(reply) = fields.get("reply") {
            let reply = reply
                .as_object()
                .ok_or_else(|| fail("`reply` is not a JSON object"))?;
            check_record(reply, &subject, &cp, false)?;
        }
        sizes.push(cp.tree_size);
        names.extend(found.into_iter().map(|c| c.witness));
    }
    sizes.sort_unstable();
    sizes.dedup();
    names.sort();
    names.dedup();
    Ok(DisclosureSummary {
        items: items.len(),
        tree_sizes: sizes,
        cosigned_by: names,
    })
}

/// Checks one shown record: its leaf, its fields against the leaf, the subject, and its
/// inclusion in the checkpoint's tree. `top`: an item (a nested reply has no checkpoint).
fn check_record(
    fields: &serde_json::Map<String, Value>,
    subject: &Value,
    cp: &super::checkpoint::Checkpoint,
    top: bool,
) -> Result<(), Failure> {
    let seq = fields.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let bad = |reason: String| Failure { seq, reason };
    let fail = |reason: &str| bad(reason.to_owned());
    let leaf = fields
        .get("leaf")
        .and_then(Value::as_str)
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or_else(|| fail("no base64 `leaf` (was the extract asked with \"proofs\": true?)"))?;
    let record =
        AuditRecord::from_leaf(&leaf).map_err(|_| fail("the leaf is not an audit record"))?;
    if record.leaf_bytes() != leaf {
        return Err(fail("the leaf is not in canonical (JCS) form"));
    }
    if record.seq != seq {
        return Err(fail("`seq` differs from the leaf"));
    }
    let leaf_json: Value =
        serde_json::from_slice(&leaf).map_err(|_| fail("the leaf is not JSON"))?;
    for (k, v) in fields {
        if PROOF_FIELDS.contains(&k.as_str()) {
            if !top && (k == "checkpoint" || k == "reply") {
                return Err(bad(format!("unknown field `{k}` in a reply")));
            }
            continue;
        }
        match leaf_json.get(k) {
            Some(lv) if lv == v => {}
            Some(_) => return Err(bad(format!("`{k}` differs from the leaf"))),
            None => return Err(bad(format!("unknown field `{k}`"))),
        }
    }
    if leaf_json.get("subject") != Some(subject) {
        return Err(fail("the extract's `subject` is not the leaf's"));
    }
    let p = fields
        .get("inclusion_proof")
        .ok_or_else(|| fail("no `inclusion_proof`"))?;
    let index = p.get("leaf_index").and_then(Value::as_u64);
    let size = p.get("tree_size").and_then(Value::as_u64);
    let hashes: Option<Vec<Hash>> = p.get("hashes").and_then(Value::as_array).and_then(|a| {
        a.iter()
            .map(|h| {
                h.as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|b| Hash::try_from(b).ok())
            })
            .collect()
    });
    let (Some(index), Some(size), Some(hashes)) = (index, size, hashes) else {
        return Err(fail("the inclusion proof is malformed"));
    };
    if index.checked_add(1) != Some(seq) || size != cp.tree_size {
        return Err(fail(
            "the inclusion proof is not for this record and checkpoint",
        ));
    }
    proof::verify_inclusion(
        &merkle::leaf_hash(&leaf),
        index,
        size,
        &hashes,
        &cp.root_hash,
    )
    .map_err(|e| bad(format!("the inclusion proof does not verify ({e})")))
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;
    use crate::audit::checkpoint::{Checkpoint, FnSigner};
    use crate::audit::record::{Action, Decision};

    /// Review of the witnesses: a `leaf_index` of 2^64 - 1 overflowed `index + 1` (a panic
    /// in debug builds) instead of being refused as an inclusion proof of another record.
    #[test]
    fn a_huge_leaf_index_is_refused_not_a_panic() {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[5u8; 32]).unwrap();
        let public_key: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let record = AuditRecord {
            seq: 1,
            subject: Some("s".into()),
            ..AuditRecord::new(Action::Disclosure, Decision::Permit)
        };
        let leaf = record.leaf_bytes();
        let cp = Checkpoint::new("t", 1, merkle::leaf_hash(&leaf));
        let signer = FnSigner {
            name: "samgate/t".to_owned(),
            public_key,
            sign: |m: &[u8]| pair.sign(m).as_ref().try_into().unwrap(),
        };
        let note = cp.sign(&signer).unwrap();
        let item = |index: u64| {
            serde_json::json!({"subject": "s", "disclosures": [{
                "seq": 1,
                "leaf": STANDARD.encode(&leaf),
                "inclusion_proof": {"leaf_index": index, "tree_size": 1, "hashes": []},
                "checkpoint": note,
            }]})
        };
        assert!(verify_value(&item(0), &public_key, &[], 0).is_ok());
        let err = verify_value(&item(u64::MAX), &public_key, &[], 0).unwrap_err();
        assert_eq!(err.seq, 1);
        assert!(err.reason.contains("not for this record"), "{}", err.reason);
    }
}
