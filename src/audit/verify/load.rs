//! Where the verifier's input comes from: a database (`audit_records`
//! joined with the level-0 `merkle_nodes`, `tree_heads`, `audit_state`) or an
//! NDJSON export, each read in a streaming pass.

use std::io::{BufRead, BufReader};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::{fail, Columns, Entry, Failure, SignedHead, Source, Summary, Verifier, VerifyError};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::cosign::{self, WitnessKey};
use crate::audit::merkle::{Frontier, Hash};
use crate::store::Store;

type Row = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Vec<u8>,
    Option<Vec<u8>>,
);

/// A checkpoint kept earlier, with the witnesses whose cosignatures it must carry
/// (DESIGN §12): `quorum` valid cosignatures by distinct `witnesses`.
#[derive(Debug, Clone, Default)]
pub struct KeptCheckpoint {
    /// The signed note (log signature and cosignature lines).
    pub note: String,
    /// The witness keys to count.
    pub witnesses: Vec<WitnessKey>,
    /// Cosignatures required.
    pub quorum: usize,
}

impl KeptCheckpoint {
    /// Opens the kept checkpoint for the log `origin` with its key: the log signature,
    /// then the quorum. A failure names the size the checkpoint claims.
    pub fn open(&self, origin: &str, public_key: &[u8; 32]) -> Result<Checkpoint, Failure> {
        let claimed = self
            .note
            .split('\n')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let first = self.note.split('\n').next().unwrap_or("");
        if first != origin {
            return fail(
                claimed,
                format!("the kept checkpoint is of the log `{first}`, not `{origin}`"),
            );
        }
        cosign::open_cosigned(&self.note, origin, public_key, &self.witnesses, self.quorum)
            .map(|(cp, _)| cp)
            .map_err(|e| Failure {
                seq: claimed,
                reason: format!("the kept checkpoint of size {claimed} does not verify: {e}"),
            })
    }
}

/// Verifies the log in a database against its signed heads.
pub async fn verify_store(
    store: &Store,
    key_name: &str,
    public_key: [u8; 32],
) -> Result<Summary, VerifyError> {
    verify_store_kept(store, key_name, public_key, None).await
}

/// [`verify_store`], and the log must contain the tree of a kept checkpoint.
pub async fn verify_store_kept(
    store: &Store,
    key_name: &str,
    public_key: [u8; 32],
    kept: Option<&KeptCheckpoint>,
) -> Result<Summary, VerifyError> {
    let db = |e: sqlx::Error| VerifyError::Input(format!("reading the database: {e}"));
    let rows: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT tree_size, root_hash, checkpoint FROM tree_heads ORDER BY tree_size",
    )
    .fetch_all(store.pool())
    .await
    .map_err(db)?;
    let mut heads = Vec::with_capacity(rows.len());
    for (size, root, checkpoint) in rows {
        let tree_size = u64::try_from(size).unwrap_or(0);
        let Ok(root_hash) = Hash::try_from(root) else {
            return fail(
                tree_size,
                format!("signed tree head of size {tree_size}: the root is not 32 bytes"),
            );
        };
        heads.push(SignedHead {
            tree_size,
            root_hash,
            checkpoint,
        });
    }
    let mut v = Verifier::new(Some(key_name.to_owned()), public_key, heads)?;
    if let Some(kept) = kept {
        let cp = kept.open(key_name, &public_key)?;
        if cp.tree_size > 0 {
            v.keep_checkpoint(cp.tree_size, cp.root_hash)?;
        }
    }
    let mut after = 0i64;
    loop {
        let page: Vec<Row> = sqlx::query_as(
            "SELECT r.seq, r.time_us, r.action, r.actor_party, r.from_party, r.to_party, r.msg_type, \
             r.subject, r.exchange_id, r.consent_id, r.decision, r.leaf, n.hash \
             FROM audit_records r LEFT JOIN merkle_nodes n ON n.level = 0 AND n.idx = r.seq - 1 \
             WHERE r.seq > $1 ORDER BY r.seq LIMIT 1000",
        )
        .bind(after)
        .fetch_all(store.pool())
        .await
        .map_err(db)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for row in page {
            let (seq, time_us, action, actor_party, from_party, to_party, msg_type) =
                (row.0, row.1, row.2, row.3, row.4, row.5, row.6);
            let columns = Box::new(Columns {
                time_us,
                action,
                actor_party,
                from_party,
                to_party,
                msg_type,
                subject: row.7,
                exchange_id: row.8,
                consent_id: row.9,
                decision: row.10,
            });
            let node = row.12.and_then(|h| Hash::try_from(h).ok());
            v.push(Entry {
                seq: u64::try_from(seq).unwrap_or(0),
                leaf: row.11,
                source: Source::Database { columns, node },
            })?;
        }
    }
    let first_unsigned = v.first_unsigned();
    let summary = v.finish()?;
    // The writer's own state must describe the same tree.
    let state: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT tree_size, frontier FROM audit_state WHERE id = 1")
            .fetch_optional(store.pool())
            .await
            .map_err(db)?;
    if let Some((size, frontier)) = state {
        let size = u64::try_from(size).unwrap_or(0);
        let n = summary.records;
        if size > n {
            return fail(
                n + 1,
                format!("missing (the log state says {size} records)"),
            );
        }
        if size < n {
            return fail(
                size + 1,
                format!("not part of the tree (the log state says {size} records)"),
            );
        }
        let root = Frontier::from_bytes(&frontier).map(|f| f.root()).ok();
        if root != Some(summary.root) {
            return fail(
                first_unsigned.min(n.max(1)),
                "the log state's root differs from the root over the records",
            );
        }
    }
    Ok(summary)
}

/// Verifies an NDJSON export (records, then one `{"tree_head": ...}` line).
/// The key name is the checkpoint's origin.
pub fn verify_export(path: &Path, public_key: [u8; 32]) -> Result<Summary, VerifyError> {
    verify_export_kept(path, public_key, None)
}

/// [`verify_export`], and the export must contain the tree of a kept checkpoint.
pub fn verify_export_kept(
    path: &Path,
    public_key: [u8; 32],
    kept: Option<&KeptCheckpoint>,
) -> Result<Summary, VerifyError> {
    let open = || {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))
    };
    let read_err = |e: std::io::Error| VerifyError::Input(format!("{}: {e}", path.display()));
    // Pass 1: the tree head (the last line) and the number of record lines.
    let mut last: Option<String> = None;
    let mut count = 0u64;
    for line in open()?.lines() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(prev) = last.replace(line) {
            if prev.starts_with("{\"tree_head\"") {
                return fail(count + 1, "a tree head line before the end of the export");
            }
            count += 1;
        }
    }
    let head_line = last.unwrap_or_default();
    let head = parse_head_line(&head_line).ok_or(Failure {
        seq: count + 2,
        reason: "missing (the export does not end with a tree head line; truncated?)".into(),
    })?;
    // An export ends exactly at its head: records after it are covered by no signature.
    if count > head.tree_size {
        return fail(
            head.tree_size + 1,
            format!(
                "not covered by the export's tree head of size {} (an export must end at its head)",
                head.tree_size
            ),
        );
    }
    let origin = head.checkpoint.split('\n').next().unwrap_or("").to_owned();
    let mut v = Verifier::new(None, public_key, vec![head])?;
    if let Some(kept) = kept {
        let cp = kept.open(&origin, &public_key)?;
        if cp.tree_size > 0 {
            v.keep_checkpoint(cp.tree_size, cp.root_hash)?;
        }
    }
    // Pass 2: the records.
    let mut seen = 0u64;
    for line in open()?.lines() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        if seen == count {
            break;
        }
        seen += 1;
        let pos = v.size() + 1;
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(&line) else {
            return fail(pos, "the line is not a JSON object");
        };
        let leaf = obj
            .remove("leaf")
            .and_then(|l| l.as_str().and_then(|s| STANDARD.decode(s).ok()));
        let Some(leaf) = leaf else {
            return fail(pos, "the record has no base64 `leaf`");
        };
        let leaf_hash = obj
            .remove("leaf_hash")
            .and_then(|h| h.as_str().map(str::to_owned));
        let seq = obj.get("seq").and_then(Value::as_u64).unwrap_or(0);
        v.push(Entry {
            seq,
            leaf,
            source: Source::Export {
                view: obj,
                leaf_hash,
            },
        })?;
    }
    Ok(v.finish()?)
}

/// Parses `{"tree_head": {tree_size, root_hash, time, checkpoint}}`.
fn parse_head_line(line: &str) -> Option<SignedHead> {
    let v: Value = serde_json::from_str(line).ok()?;
    let h = v.get("tree_head")?;
    let root = hex::decode(h.get("root_hash")?.as_str()?).ok()?;
    Some(SignedHead {
        tree_size: h.get("tree_size")?.as_u64()?,
        root_hash: Hash::try_from(root).ok()?,
        checkpoint: h.get("checkpoint")?.as_str()?.to_owned(),
    })
}
