//! Offline verification of the audit log, for `samgate audit verify` and the
//! tests (DESIGN §6, §9 "Export and verify"; the checks are listed in
//! `docs/audit.md`).
//!
//! One pass over the records in seq order, with the signed tree heads known
//! up front. Per record: the seq is the next position; the leaf parses as a
//! record whose `seq` is that position and is in canonical form; the record's
//! other copies agree with the leaf (database: the indexed columns and the
//! stored level-0 Merkle node; export: the line's fields, and `leaf_hash` where an older export has it).
//! When the tree reaches a signed head's size: the checkpoint signature
//! verifies, it states the head's size and root, the root recomputed from
//! the leaves equals it, and a consistency proof from the previous head
//! (built from the recomputed nodes) verifies. A head larger than the log
//! means records were removed. The first failure ends the run and names a seq.

mod load;

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::checkpoint::{Checkpoint, ORIGIN_PREFIX};
use super::merkle::{self, Frontier, Hash, NodeId};
use super::proof;
use super::record::AuditRecord;

pub use load::{
    verify_export, verify_export_kept, verify_store, verify_store_kept, KeptCheckpoint,
};

/// The first bad record: printed as `seq <n>: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The seq named.
    pub seq: u64,
    /// What is wrong (never record contents).
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {}: {}", self.seq, self.reason)
    }
}

/// `Err` of the [`Failure`] at `seq` (as a `Failure` or a [`VerifyError`]).
fn fail<T, E: From<Failure>>(seq: u64, reason: impl Into<String>) -> Result<T, E> {
    Err(Failure {
        seq,
        reason: reason.into(),
    }
    .into())
}

/// Why verification did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A check failed (exit 1).
    #[error("{0}")]
    Failed(Failure),
    /// The input could not be read at all (exit 2).
    #[error("{0}")]
    Input(String),
}

impl From<Failure> for VerifyError {
    fn from(f: Failure) -> Self {
        VerifyError::Failed(f)
    }
}

/// A successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records verified.
    pub records: u64,
    /// The root over all of them.
    pub root: Hash,
    /// The size of the largest signed head (records after it are checked
    /// for form but not yet covered by a signature).
    pub signed_size: u64,
}

/// A signed tree head as stored or exported.
#[derive(Debug, Clone)]
pub struct SignedHead {
    /// Records covered.
    pub tree_size: u64,
    /// The root claimed next to the checkpoint.
    pub root_hash: Hash,
    /// The C2SP signed note.
    pub checkpoint: String,
}

/// The indexed columns of an `audit_records` row.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    /// `time_us`.
    pub time_us: i64,
    /// `action`.
    pub action: String,
    /// `actor_party`.
    pub actor_party: Option<String>,
    /// `from_party`.
    pub from_party: Option<String>,
    /// `to_party`.
    pub to_party: Option<String>,
    /// `msg_type`.
    pub msg_type: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `exchange_id`.
    pub exchange_id: Option<String>,
    /// `consent_id`.
    pub consent_id: Option<String>,
    /// `decision`.
    pub decision: String,
}

/// Where a record came from, with the copies to compare against its leaf.
#[derive(Debug, Clone)]
pub enum Source {
    /// A database row and its stored level-0 Merkle node (if any).
    Database {
        /// The row's columns.
        columns: Box<Columns>,
        /// `merkle_nodes` (0, seq - 1).
        node: Option<Hash>,
    },
    /// An export line: its fields other than `leaf`, and `leaf_hash` (only
    /// in exports from before DESIGN §10 "Records as served").
    Export {
        /// The line without `leaf` and `leaf_hash`.
        view: Map<String, Value>,
        /// The `leaf_hash` text, if present.
        leaf_hash: Option<String>,
    },
}

/// One record to check.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The seq the source gives (column or line field).
    pub seq: u64,
    /// The leaf bytes.
    pub leaf: Vec<u8>,
    /// Its other copies.
    pub source: Source,
}

/// The incremental verifier (see the module doc).
pub struct Verifier {
    key_name: Option<String>,
    public_key: [u8; 32],
    heads: Vec<SignedHead>,
    next_head: usize,
    frontier: Frontier,
    needed: HashSet<NodeId>,
    nodes: HashMap<NodeId, Hash>,
    last_head: Option<(u64, Hash)>,
    kept: Option<(u64, Hash)>,
}

impl Verifier {
    /// A verifier for a log with these heads. `key_name` is the expected
    /// origin (`samgate/<deployment id>`); `None` takes it from each
    /// checkpoint, which must then start with `samgate/`.
    pub fn new(
        key_name: Option<String>,
        public_key: [u8; 32],
        mut heads: Vec<SignedHead>,
    ) -> Result<Verifier, Failure> {
        heads.sort_by_key(|h| h.tree_size);
        let mut needed = HashSet::new();
        for pair in heads.windows(2) {
            if let [a, b] = pair {
                if a.tree_size == b.tree_size {
                    return fail(a.tree_size, "two signed tree heads of the same size");
                }
                if let Ok(ids) = proof::consistency_proof_nodes(a.tree_size, b.tree_size) {
                    needed.extend(ids);
                }
            }
        }
        let mut v = Verifier {
            key_name,
            public_key,
            heads,
            next_head: 0,
            frontier: Frontier::new(),
            needed,
            nodes: HashMap::new(),
            last_head: None,
            kept: None,
        };
        v.check_heads()?;
        Ok(v)
    }

    /// A checkpoint kept earlier (DESIGN §12, already opened and checked by the caller):
    /// the log must reach its size, and the root over its first `tree_size` records must be
    /// its root. This catches truncation and rollback to an older genuine head.
    pub fn keep_checkpoint(&mut self, tree_size: u64, root_hash: Hash) -> Result<(), Failure> {
        if tree_size <= self.frontier.size() {
            return fail(
                tree_size,
                "a kept checkpoint must be given before the records",
            );
        }
        self.kept = Some((tree_size, root_hash));
        Ok(())
    }

    /// Checks the next record.
    pub fn push(&mut self, entry: Entry) -> Result<(), Failure> {
        let pos = self.frontier.size().saturating_add(1);
        if entry.seq > pos {
            return fail(
                pos,
                format!("missing (the next record is seq {})", entry.seq),
            );
        }
        if entry.seq < pos {
            return fail(
                pos,
                format!("found seq {} here (duplicate or out of order)", entry.seq),
            );
        }
        let Ok(record) = AuditRecord::from_leaf(&entry.leaf) else {
            return fail(pos, unparsed_leaf(&entry.leaf));
        };
        if record.seq != pos {
            return fail(pos, format!("the leaf says seq {}", record.seq));
        }
        if record.leaf_bytes() != entry.leaf {
            return fail(pos, "the leaf is not in canonical (JCS) form");
        }
        let leaf_hash = merkle::leaf_hash(&entry.leaf);
        match &entry.source {
            Source::Database { columns, node } => {
                if let Some(column) = column_mismatch(columns, &record) {
                    return fail(pos, format!("column `{column}` does not match the leaf"));
                }
                match node {
                    None => return fail(pos, "the stored leaf hash (Merkle node) is missing"),
                    Some(h) if *h != leaf_hash => {
                        return fail(pos, "the leaf does not match the stored leaf hash")
                    }
                    Some(_) => {}
                }
            }
            Source::Export {
                view,
                leaf_hash: lh,
            } => {
                let leaf_value: Value = serde_json::from_slice(&entry.leaf).unwrap_or(Value::Null);
                if leaf_value.as_object() != Some(view) {
                    return fail(pos, "the record's fields differ from its leaf");
                }
                // Records are served as leaf + `leaf` (DESIGN §10); exports
                // made before that carried `leaf_hash`, which must then match.
                if lh
                    .as_deref()
                    .is_some_and(|h| h != hex::encode(leaf_hash).as_str())
                {
                    return fail(pos, "`leaf_hash` does not match the leaf");
                }
            }
        }
        let completed = self.frontier.push(leaf_hash).map_err(|e| Failure {
            seq: pos,
            reason: e.to_string(),
        })?;
        for node in completed {
            if self.needed.contains(&node.id()) {
                self.nodes.insert(node.id(), node.hash);
            }
        }
        if let Some((size, root)) = self.kept {
            if size == pos && self.frontier.root() != root {
                return fail(
                    size,
                    format!("the root of records 1..{size} is not the root of the kept checkpoint of size {size} (the log was rewritten)"),
                );
            }
        }
        self.check_heads()
    }

    /// Ends the run: every signed head must have been reached.
    pub fn finish(self) -> Result<Summary, Failure> {
        let n = self.frontier.size();
        if let Some((size, _)) = self.kept.filter(|(s, _)| *s > n) {
            return fail(
                n.saturating_add(1),
                format!("missing (the kept checkpoint covers {size} records, the log ends at {n}: truncated or rolled back)"),
            );
        }
        if let Some(head) = self.heads.get(self.next_head) {
            return fail(
                n.saturating_add(1),
                format!(
                    "missing (signed tree head covers {} records)",
                    head.tree_size
                ),
            );
        }
        Ok(Summary {
            records: n,
            root: self.frontier.root(),
            signed_size: self.last_head.map_or(0, |(s, _)| s),
        })
    }

    /// The number of records pushed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The first seq not yet covered by a verified signed head.
    pub fn first_unsigned(&self) -> u64 {
        self.last_head.map_or(0, |(s, _)| s).saturating_add(1)
    }

    /// Checks every head whose size the tree has reached.
    fn check_heads(&mut self) -> Result<(), Failure> {
        let size = self.frontier.size();
        while let Some(head) = self.heads.get(self.next_head) {
            if head.tree_size != size {
                break;
            }
            let what = format!("signed tree head of size {size}");
            let name = match &self.key_name {
                Some(n) => n.clone(),
                None => {
                    let origin = head.checkpoint.lines().next().unwrap_or("");
                    if !origin.starts_with(ORIGIN_PREFIX) {
                        return fail(size, format!("{what}: the origin is not samgate/..."));
                    }
                    origin.to_owned()
                }
            };
            let cp = Checkpoint::open(&head.checkpoint, &name, &self.public_key).map_err(|e| {
                Failure {
                    seq: size,
                    reason: format!("{what}: the checkpoint does not verify ({e})"),
                }
            })?;
            if cp.tree_size != head.tree_size || cp.root_hash != head.root_hash {
                return fail(
                    size,
                    format!("{what}: the checkpoint states another size or root"),
                );
            }
            let root = self.frontier.root();
            let first = self.first_unsigned().min(size.max(1));
            if root != head.root_hash {
                return fail(
                    first,
                    format!("the root of records 1..{size} does not match the {what} (a record in seq {first}..{size} was changed)"),
                );
            }
            if let Some((prev, prev_root)) = self.last_head {
                let consistent = proof::consistency_proof(prev, size, &self.nodes)
                    .and_then(|p| proof::verify_consistency(prev, size, &prev_root, &root, &p));
                if let Err(e) = consistent {
                    return fail(
                        first,
                        format!("tree heads {prev} and {size} are not consistent ({e})"),
                    );
                }
            }
            self.last_head = Some((size, root));
            self.next_head += 1;
        }
        Ok(())
    }
}

/// Why a leaf is no [`AuditRecord`]: an action or decision this build does
/// not know (named as such, never quoted), or anything else.
fn unparsed_leaf(leaf: &[u8]) -> &'static str {
    use super::record::{Action, Decision};
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(leaf) else {
        return "the leaf is not a valid audit record";
    };
    let unknown = |key: &str, known: &dyn Fn(&str) -> bool| {
        m.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !known(s))
    };
    if unknown("action", &|s| s.parse::<Action>().is_ok()) {
        "the leaf's action is not one this verifier knows"
    } else if unknown("decision", &|s| s.parse::<Decision>().is_ok()) {
        "the leaf's decision is not one this verifier knows"
    } else {
        "the leaf is not a valid audit record"
    }
}

/// The first indexed column that disagrees with the record, by name.
fn column_mismatch(c: &Columns, r: &AuditRecord) -> Option<&'static str> {
    let time_us =
        time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(crate::clock::to_us);
    let checks: [(&'static str, bool); 10] = [
        ("time_us", time_us == Some(c.time_us)),
        ("action", c.action == r.action.as_str()),
        ("actor_party", c.actor_party == r.actor_party),
        ("from_party", c.from_party == r.from),
        ("to_party", c.to_party == r.to),
        ("msg_type", c.msg_type == r.msg_type),
        ("subject", c.subject == r.subject),
        ("exchange_id", c.exchange_id == r.exchange_id),
        ("consent_id", c.consent_id == r.consent_id),
        ("decision", c.decision == r.decision.as_str()),
    ];
    checks.iter().find(|(_, ok)| !ok).map(|(name, _)| *name)
}

#[cfg(test)]
mod tests;
