//! The demo's last chapter (DESIGN §12): the tree head cosigned by the agencies'
//! witnesses, and a rollback that only a kept checkpoint catches. The auditor keeps the
//! cosigned checkpoint; the log is then "rolled back" in a copy of the export (records cut
//! at an older genuine tree head, with that head). Without the kept checkpoint the copy
//! verifies; with it, `audit verify --checkpoint` names the missing records.

use serde_json::{json, Value};

use super::audit::{audit_key, fail};
use super::out::Out;
use super::setup::{Deployment, AUDITOR};
use super::{DemoError, Tally};
use crate::audit::cosign::{self, WitnessKey};
use crate::audit::verify::{self, KeptCheckpoint, VerifyError};

/// Whether `what` answered 200 (a surprise in the tally otherwise).
fn answered_ok(out: &Out, tally: &mut Tally, what: &str, status: u16) -> bool {
    if status != 200 {
        fail(out, tally, format!("{what} answered {status}"));
    }
    status == 200
}

/// Runs the witness steps.
/// Long: chapter 9 of the demo as one script, its steps in the order they are
/// printed.
pub async fn check(d: &Deployment, out: &Out, tally: &mut Tally) -> Result<(), DemoError> {
    out.chapter("9. The agencies' witnesses: a log that no single operator can rewrite");
    let auditor = d.client(AUDITOR)?;
    let (origin, pk) = match audit_key(d) {
        Ok(k) => k,
        Err(e) => {
            fail(out, tally, format!("audit public key: {e}"));
            return Ok(());
        }
    };
    let mut keys = Vec::new();
    for w in &d.config.witnesses {
        match WitnessKey::load(&w.public_key, Some(&w.name)) {
            Ok(k) => keys.push(k),
            Err(e) => fail(out, tally, format!("witness key: {e}")),
        }
    }
    let quorum = d.config.audit.witness_quorum;

    out.step("GET /v1/audit/tree-head: the checkpoint with the witnesses' cosignatures");
    let rsp = auditor.get("/v1/audit/tree-head").await?;
    if !answered_ok(out, tally, "GET /v1/audit/tree-head", rsp.status) {
        return Ok(());
    }
    let note = rsp
        .json
        .get("checkpoint")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kept = match cosign::open_cosigned(&note, &origin, &pk, &keys, quorum) {
        Ok((cp, found)) => {
            let names: Vec<&str> = found.iter().map(|c| c.witness.as_str()).collect();
            out.ok(
                "cosigned",
                &format!(
                    "tree size {} by {} ({} of {} witnesses, quorum {quorum})",
                    cp.tree_size,
                    names.join(", "),
                    names.len(),
                    keys.len()
                ),
            );
            for line in note.lines() {
                out.line(line);
            }
            tally.as_expected += 1;
            KeptCheckpoint {
                note: note.clone(),
                witnesses: keys.clone(),
                quorum,
            }
        }
        Err(e) => {
            fail(out, tally, format!("the cosigned checkpoint: {e}"));
            return Ok(());
        }
    };
    let kept_file = d.path().join("kept-checkpoint.txt");
    if std::fs::write(&kept_file, &note).is_ok() {
        out.note(&format!(
            "the auditor keeps it: {} (and the witness keys witnesses/*/witness.vkey)",
            kept_file.display()
        ));
    }

    out.step("A rolled-back copy of the log is caught by audit verify --checkpoint");
    rollback(d, out, tally, &pk, &kept).await?;

    out.step("Alva's extract with proofs, checked offline as her lawyer would");
    let rsp = d
        .client(super::setup::INTAKE)?
        .post(
            "/v1/disclosures",
            &json!({ "personnummer": super::script::ALVA.number, "proofs": true }),
        )
        .await?;
    if !answered_ok(out, tally, "POST /v1/disclosures with proofs", rsp.status) {
        return Ok(());
    }
    match crate::audit::disclosure_proofs::verify_value(&rsp.json, &pk, &keys, quorum) {
        Ok(s) => {
            out.ok(
                "proven",
                &format!(
                    "{} entries: each leaf is in the tree of size {} cosigned by {}",
                    s.items,
                    s.tree_sizes
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    s.cosigned_by.join(", ")
                ),
            );
            tally.as_expected += 1;
        }
        Err(f) => fail(out, tally, format!("the extract with proofs: {f}")),
    }
    Ok(())
}

async fn rollback(
    d: &Deployment,
    out: &Out,
    tally: &mut Tally,
    pk: &[u8; 32],
    kept: &KeptCheckpoint,
) -> Result<(), DemoError> {
    let kept_size: u64 = kept
        .note
        .lines()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let heads = match d.store() {
        Some(store) => crate::audit::query::all_heads(store)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    // An older genuine head, well below the kept one: what an operator could show later.
    let Some(old) = heads
        .iter()
        .rev()
        .find(|h| h.tree_size > 0 && h.tree_size + 3 <= kept_size)
    else {
        out.note("skipped: no older tree head to roll back to");
        return Ok(());
    };
    let rsp = d.client(AUDITOR)?.get("/v1/audit/export").await?;
    let records: Vec<&str> = rsp
        .text
        .lines()
        .filter(|l| !l.starts_with("{\"tree_head\""))
        .collect();
    let Some(kept_records) = records.get(..usize::try_from(old.tree_size).unwrap_or(usize::MAX))
    else {
        fail(
            out,
            tally,
            "the export is shorter than an older head".into(),
        );
        return Ok(());
    };
    let mut text = String::new();
    for r in kept_records {
        text.push_str(r);
        text.push('\n');
    }
    let head: Value = json!({ "tree_head": old.to_json() });
    text.push_str(&head.to_string());
    text.push('\n');
    let path = d.path().join("rolled-back.ndjson");
    if let Err(e) = std::fs::write(&path, text) {
        fail(out, tally, format!("writing {}: {e}", path.display()));
        return Ok(());
    }
    out.line(&format!(
        "a copy of the log cut back to the older signed tree head of size {} (records {}..{} gone): {}",
        old.tree_size,
        old.tree_size + 1,
        kept_size,
        path.display()
    ));
    match verify::verify_export(&path, *pk) {
        Ok(s) => out.line(&format!(
            "audit verify --export without a kept checkpoint: verified {} records (the rollback is invisible)",
            s.records
        )),
        Err(e) => out.line(&format!("audit verify --export alone: {e}")),
    }
    match verify::verify_export_kept(&path, *pk, Some(kept)) {
        Err(VerifyError::Failed(f)) => {
            out.denied(
                "caught",
                &format!("audit verify --checkpoint kept-checkpoint.txt: {f}"),
            );
            tally.as_expected += 1;
        }
        Err(VerifyError::Input(e)) => fail(out, tally, format!("verify --checkpoint: {e}")),
        Ok(_) => fail(
            out,
            tally,
            "the rolled-back copy verified against the kept checkpoint".into(),
        ),
    }
    Ok(())
}
