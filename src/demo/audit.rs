//! The end of the demo (DESIGN §6, §9): the auditor fetches the signed tree
//! head and checks its signature, exports the whole log and recomputes the
//! Merkle root from the records, checks one inclusion proof, and the intake
//! party prints Alva's register extract (GDPR art. 15).
//!
//! The whole-log check recomputes the root itself with [`crate::audit::merkle`]
//! and opens the checkpoint with [`Checkpoint::open`]; it needs only the
//! export, the audit public key and the deployment id, like an outside
//! auditor would.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value};

use super::client::Rsp;
use super::out::Out;
use super::script::ALVA;
use super::setup::{Deployment, AUDITOR, INTAKE};
use super::{DemoError, Tally};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::merkle::{leaf_hash, root_from_leaves, Hash};

/// A verified tree head.
#[derive(Clone, Copy)]
struct Head {
    tree_size: u64,
    root: Hash,
}

/// One exported record: its parsed form and its leaf bytes.
struct Leaf {
    record: Value,
    bytes: Vec<u8>,
}

/// Runs the audit steps and the register extract.
pub async fn check(d: &Deployment, out: &Out, tally: &mut Tally) -> Result<(), DemoError> {
    out.chapter(&format!(
        "7. The auditor ({AUDITOR}, user revisor.anna) verifies the log"
    ));
    let auditor = d.client(AUDITOR)?;
    let key = audit_key(d);

    out.step("GET /v1/audit/tree-head: the gateway's signed checkpoint");
    let rsp = auditor.get("/v1/audit/tree-head").await?;
    let head = match (&key, gate(out, tally, "GET /v1/audit/tree-head", &rsp)) {
        (_, false) => None,
        (Err(e), true) => {
            fail(out, tally, format!("audit public key: {e}"));
            None
        }
        (Ok((name, pk)), true) => match open_head(&rsp.json, name, pk) {
            Ok(h) => {
                out.ok(
                    "signed",
                    &format!(
                        "tree size {}, root {}: the signature checks with keys/audit.pub.pem",
                        h.tree_size,
                        hex::encode(h.root)
                    ),
                );
                tally.as_expected += 1;
                Some(h)
            }
            Err(e) => {
                fail(out, tally, format!("tree head: {e}"));
                None
            }
        },
    };

    out.step("GET /v1/audit/export: every record, recomputed into the Merkle root");
    let rsp = auditor.get("/v1/audit/export").await?;
    let mut leaves = Vec::new();
    if gate(out, tally, "GET /v1/audit/export", &rsp) {
        match (&key, verify_export(&rsp.text)) {
            (Ok((name, pk)), Ok(parsed)) => {
                leaves = parsed.leaves;
                match parsed.head.map(|n| open_head(&n, name, pk)) {
                    Some(Ok(h)) => {
                        offline_verify(d, out, tally, &rsp.text, pk);
                        whole_log(out, tally, &leaves, h);
                        if let Some(earlier) = head.filter(|e| e.tree_size < h.tree_size) {
                            earlier_head(out, tally, &leaves, earlier);
                        }
                    }
                    Some(Err(e)) => fail(out, tally, format!("export tree head: {e}")),
                    None => fail(out, tally, "the export has no tree head".into()),
                }
                super::extract::pii_scan(out, tally, &rsp.text);
            }
            (Err(e), _) => fail(out, tally, format!("audit public key: {e}")),
            (_, Err(e)) => fail(out, tally, e),
        }
    }

    out.step("GET /v1/audit/proof/inclusion: one record is in the signed tree");
    match head {
        Some(h) if !leaves.is_empty() => inclusion(d, out, tally, &leaves, h).await?,
        _ => out.note("skipped: needs the tree head and the export"),
    }

    out.chapter("8. Alva asks what has been shared about her (register extract)");
    out.step(&format!("POST /v1/disclosures as {INTAKE}"));
    let rsp = d
        .client(INTAKE)?
        .post("/v1/disclosures", &json!({ "personnummer": ALVA.number }))
        .await?;
    if gate(out, tally, "POST /v1/disclosures", &rsp) {
        super::extract::disclosures(out, &rsp.json);
        tally.as_expected += 1;
    }
    Ok(())
}

/// True if the response is a 200 to go on with; otherwise reports it.
fn gate(out: &Out, tally: &mut Tally, what: &str, rsp: &Rsp) -> bool {
    if rsp.status == 200 {
        return true;
    }
    if rsp.unavailable() {
        out.warn(&format!(
            "{what} is not available yet in this build ({}): skipped",
            rsp.reason()
        ));
        tally.unavailable.push(what.to_owned());
    } else {
        fail(out, tally, format!("{what}: {}", rsp.reason()));
    }
    false
}

pub(super) fn fail(out: &Out, tally: &mut Tally, text: String) {
    out.denied("failed", &text);
    tally.surprises.push(text);
}

/// The checkpoint key name (`samgate/<deployment id>`) and audit public key.
pub(super) fn audit_key(d: &Deployment) -> Result<(String, [u8; 32]), String> {
    let pk = crate::keys::load_public_key_pem(&d.path().join("keys/audit.pub.pem"))
        .map_err(|e| e.to_string())?;
    let raw: [u8; 32] = pk
        .raw
        .as_slice()
        .try_into()
        .map_err(|_| "not an Ed25519 key".to_owned())?;
    Ok((format!("samgate/{}", d.config.server.deployment_id), raw))
}

/// Opens `{tree_size, root_hash, checkpoint}`: the signature must check and
/// the JSON fields must equal the signed ones.
fn open_head(v: &Value, name: &str, pk: &[u8; 32]) -> Result<Head, String> {
    let note = v
        .get("checkpoint")
        .and_then(Value::as_str)
        .ok_or("no checkpoint")?;
    let cp = Checkpoint::open(note, name, pk).map_err(|e| e.to_string())?;
    let size = v.get("tree_size").and_then(Value::as_u64);
    let root = v.get("root_hash").and_then(Value::as_str);
    if size != Some(cp.tree_size) || root != Some(hex::encode(cp.root_hash).as_str()) {
        return Err("tree_size or root_hash differ from the signed checkpoint".into());
    }
    Ok(Head {
        tree_size: cp.tree_size,
        root: cp.root_hash,
    })
}

struct Export {
    leaves: Vec<Leaf>,
    head: Option<Value>,
}

/// Parses the NDJSON export: records in `seq` order from 1, each `leaf` in
/// canonical form (RFC 8785) and equal to the line without `leaf` (DESIGN
/// §9, §10 "Records as served"); then the tree head line.
fn verify_export(text: &str) -> Result<Export, String> {
    let mut leaves = Vec::new();
    let mut head = None;
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: Value =
            serde_json::from_str(line).map_err(|_| format!("export line {}: not JSON", n + 1))?;
        if let Some(h) = v.get("tree_head") {
            head = Some(h.clone());
            continue;
        }
        let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if seq != leaves.len() as u64 + 1 {
            return Err(format!("seq {seq}: expected seq {}", leaves.len() + 1));
        }
        let bytes = v
            .get("leaf")
            .and_then(Value::as_str)
            .and_then(|l| base64::engine::general_purpose::STANDARD.decode(l).ok())
            .ok_or_else(|| format!("seq {seq}: no base64 leaf"))?;
        let record: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("seq {seq}: the leaf is not JSON"))?;
        if serde_json_canonicalizer::to_vec(&record).ok().as_deref() != Some(bytes.as_slice()) {
            return Err(format!("seq {seq}: the leaf is not in canonical form"));
        }
        let mut rest = v.clone();
        if let Some(obj) = rest.as_object_mut() {
            obj.remove("leaf");
        }
        if rest != record {
            return Err(format!("seq {seq}: the record differs from its leaf"));
        }
        leaves.push(Leaf { record, bytes });
    }
    Ok(Export { leaves, head })
}

fn whole_log(out: &Out, tally: &mut Tally, leaves: &[Leaf], head: Head) {
    let n = usize::try_from(head.tree_size).unwrap_or(usize::MAX);
    let Some(signed) = leaves.get(..n) else {
        return fail(
            out,
            tally,
            format!("the export has {} records, the head {n}", leaves.len()),
        );
    };
    let hashes: Vec<Hash> = signed.iter().map(|l| leaf_hash(&l.bytes)).collect();
    if root_from_leaves(&hashes) != head.root {
        return fail(
            out,
            tally,
            "the recomputed root differs from the signed root".into(),
        );
    }
    out.ok(
        "recomputed",
        &format!(
            "here too: the root of the first {n} leaves matches the signed tree head {}",
            hex::encode(head.root)
        ),
    );
    let mut actions: BTreeMap<String, usize> = BTreeMap::new();
    for l in signed {
        let a = l
            .record
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("?");
        *actions.entry(a.to_owned()).or_default() += 1;
    }
    let summary: Vec<String> = actions.iter().map(|(a, c)| format!("{c} {a}")).collect();
    out.line(&summary.join(", "));
    tally.as_expected += 1;
}

/// The whole log through [`crate::audit::verify::verify_export`], the check
/// behind `samgate audit verify --export` (every leaf, every signed head,
/// consistency between heads), on the export saved in the working set.
fn offline_verify(d: &Deployment, out: &Out, tally: &mut Tally, text: &str, pk: &[u8; 32]) {
    let file = "audit-export.ndjson";
    let path = d.path().join(file);
    if let Err(e) = std::fs::write(&path, text) {
        return fail(out, tally, format!("cannot save the export: {e}"));
    }
    match crate::audit::verify::verify_export(&path, *pk) {
        Ok(summary) => {
            out.ok(
                "verified",
                &format!(
                    "audit log: {} records, root {}",
                    summary.records,
                    hex::encode(summary.root)
                ),
            );
            if d.kept() {
                out.note(&format!(
                    "the same check offline: samgate audit verify --export {file} --public-key keys/audit.pub.pem"
                ));
            } else {
                out.note(
                    "the check of `samgate audit verify --export`: every leaf, every signed head",
                );
            }
        }
        Err(e) => fail(out, tally, format!("samgate audit verify: {e}")),
    }
}

/// The head fetched first is a prefix of the exported log.
fn earlier_head(out: &Out, tally: &mut Tally, leaves: &[Leaf], head: Head) {
    let n = usize::try_from(head.tree_size).unwrap_or(usize::MAX);
    let hashes: Vec<Hash> = leaves.iter().take(n).map(|l| leaf_hash(&l.bytes)).collect();
    if hashes.len() != n || root_from_leaves(&hashes) != head.root {
        fail(
            out,
            tally,
            format!("the first {n} records do not give the earlier signed root"),
        );
    } else {
        out.note(&format!(
            "the earlier head (size {n}) is a prefix of it: the log only grew"
        ));
    }
}

async fn inclusion(
    d: &Deployment,
    out: &Out,
    tally: &mut Tally,
    leaves: &[Leaf],
    head: Head,
) -> Result<(), DemoError> {
    let n = usize::try_from(head.tree_size).unwrap_or(usize::MAX);
    let signed = leaves.get(..n).unwrap_or(leaves);
    let is_revoked_denial =
        |l: &&Leaf| l.record.get("reason").and_then(Value::as_str) == Some("consent_revoked");
    let Some((index, leaf)) = signed
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| is_revoked_denial(l))
        .or_else(|| signed.iter().enumerate().next_back())
    else {
        out.note("skipped: the log is empty");
        return Ok(());
    };
    let seq = index as u64 + 1;
    let rsp = d
        .client(AUDITOR)?
        .get(&format!(
            "/v1/audit/proof/inclusion?seq={seq}&tree_size={}",
            head.tree_size
        ))
        .await?;
    if !gate(out, tally, "GET /v1/audit/proof/inclusion", &rsp) {
        return Ok(());
    }
    let proof: Option<Vec<Hash>> = rsp.json.get("hashes").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|h| h.as_str().and_then(|s| hex::decode(s).ok()))
            .filter_map(|b| Hash::try_from(b).ok())
            .collect()
    });
    let Some(proof) = proof else {
        fail(out, tally, "inclusion proof: no hashes".into());
        return Ok(());
    };
    let what = format!(
        "{} {}",
        leaf.record
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        leaf.record
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    match crate::audit::proof::verify_inclusion(
        &leaf_hash(&leaf.bytes),
        index as u64,
        head.tree_size,
        &proof,
        &head.root,
    ) {
        Ok(()) => {
            out.ok(
                "included",
                &format!(
                    "seq {seq} ({}) is in the signed tree of size {}: {} proof hashes",
                    what.trim(),
                    head.tree_size,
                    proof.len()
                ),
            );
            tally.as_expected += 1;
        }
        Err(e) => fail(out, tally, format!("inclusion proof for seq {seq}: {e}")),
    }
    Ok(())
}
