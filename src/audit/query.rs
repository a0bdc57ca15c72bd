//! Reading the audit log back: record filters and cursor pages, the JSON
//! view of a record, tree heads and stored Merkle nodes (DESIGN §6, §9
//! "Audit records", "Tree heads"). No I/O beyond SELECTs: the writer is
//! `audit/log.rs`.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{Map, Value};

use super::merkle::{Hash, NodeId};
use crate::store::Store;

/// Most records in one page (DESIGN §9).
pub const MAX_LIMIT: u64 = 1000;
/// Records in a page when the caller gives no `limit`.
pub const DEFAULT_LIMIT: u64 = 100;

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The database failed.
    #[error("audit storage: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value is out of range (a damaged database).
    #[error("stored audit data is malformed: {0}")]
    Malformed(&'static str),
}

/// Where a page walk stands: records after `after`, up to `until`.
///
/// `until` is the newest seq when the walk's first page was read, so a walk
/// is a snapshot: records appended meanwhile (including the audit-query
/// records of the walk itself) are not part of it and the walk ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last seq already returned.
    pub after: u64,
    /// The newest seq of the walk.
    pub until: u64,
}

impl Cursor {
    /// The opaque text form: base64url of `v1:<after>:<until>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", self.after, self.until))
    }

    /// Parses [`Cursor::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut parts = raw.split(':');
        let (Some("v1"), Some(after), Some(until), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let cursor = Cursor {
            after: after.parse().ok()?,
            until: until.parse().ok()?,
        };
        (cursor.after <= cursor.until).then_some(cursor)
    }
}

/// Record filters; every one given must match.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// `time_us >= from_us`.
    pub from_us: Option<i64>,
    /// `time_us < to_us`.
    pub to_us: Option<i64>,
    /// Actor, sender or recipient.
    pub party: Option<String>,
    /// Message type.
    pub msg_type: Option<String>,
    /// Actions (any of), as the client named them: a name that is no
    /// [`super::record::Action`] matches no record (an empty page, not an
    /// error), so these stay text.
    pub actions: Vec<String>,
    /// Decision, as text like `actions`.
    pub decision: Option<String>,
    /// Audit-domain pseudonym.
    pub subject: Option<String>,
}

/// One stored record: its seq and leaf bytes.
#[derive(Debug, Clone)]
pub struct StoredLeaf {
    /// Position in the log.
    pub seq: u64,
    /// The canonical leaf bytes.
    pub leaf: Vec<u8>,
}

/// A page of records and the cursor of the next one (`None` at the end).
#[derive(Debug)]
pub struct Page {
    /// Records in seq order.
    pub records: Vec<StoredLeaf>,
    /// Where the next page starts.
    pub next: Option<Cursor>,
}

/// A stored tree head.
#[derive(Debug, Clone)]
pub struct StoredHead {
    /// Records covered.
    pub tree_size: u64,
    /// The root over them.
    pub root_hash: Hash,
    /// When it was signed (µs since the epoch).
    pub time_us: i64,
    /// The C2SP signed note.
    pub checkpoint: String,
}

impl StoredHead {
    /// The API form `{tree_size, root_hash, time, checkpoint}` (DESIGN §9).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "tree_size": self.tree_size,
            "root_hash": hex::encode(self.root_hash),
            "time": crate::clock::rfc3339_us(self.time_us),
            "checkpoint": self.checkpoint,
        })
    }
}

fn to_u64(v: i64) -> Result<u64, QueryError> {
    u64::try_from(v).map_err(|_| QueryError::Malformed("negative sequence number or size"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The number of committed records (the tree size).
pub async fn tree_size(store: &Store) -> Result<u64, QueryError> {
    let size: Option<i64> = sqlx::query_scalar("SELECT tree_size FROM audit_state WHERE id = 1")
        .fetch_optional(store.pool())
        .await?;
    to_u64(size.unwrap_or(0))
}

/// One page of records matching `filter`, in seq order. A fresh walk
/// (`cursor` None) starts at the current end of the log.
pub async fn records_page(
    store: &Store,
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    limit: u64,
) -> Result<Page, QueryError> {
    let cursor = match cursor {
        Some(c) => c,
        None => Cursor {
            after: 0,
            until: tree_size(store).await?,
        },
    };
    let limit = limit.clamp(1, MAX_LIMIT);
    let (sql, binds) = page_sql(filter, limit);

    let mut q = sqlx::query_as::<_, (i64, Vec<u8>)>(&sql)
        .bind(to_i64(cursor.after))
        .bind(to_i64(cursor.until));
    for b in binds {
        q = match b {
            Bind::Int(v) => q.bind(v),
            Bind::Text(v) => q.bind(v),
        };
    }
    let rows = q.fetch_all(store.pool()).await?;
    let mut records = Vec::with_capacity(rows.len());
    for (seq, leaf) in rows {
        records.push(StoredLeaf {
            seq: to_u64(seq)?,
            leaf,
        });
    }
    let more = records.len() as u64 > limit;
    records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = match (more, records.last()) {
        (true, Some(last)) => Some(Cursor {
            after: last.seq,
            until: cursor.until,
        }),
        _ => None,
    };
    Ok(Page { records, next })
}

/// The page's query for `filter`: `$1` and `$2` are the cursor's bounds,
/// then one placeholder per filter argument (in `binds`), then the limit
/// (one more than `limit`, to tell whether there is a next page).
fn page_sql(filter: &RecordFilter, limit: u64) -> (String, Vec<Bind>) {
    let mut sql = String::from("SELECT seq, leaf FROM audit_records WHERE seq > $1 AND seq <= $2");
    // Placeholders are numbered in the order they are bound: $1, $2 above,
    // then each filter's text or integer argument.
    let mut n = 2;
    let mut next = || {
        n += 1;
        n
    };
    let mut binds: Vec<Bind> = Vec::new();
    if let Some(v) = filter.from_us {
        sql.push_str(&format!(" AND time_us >= ${}", next()));
        binds.push(Bind::Int(v));
    }
    if let Some(v) = filter.to_us {
        sql.push_str(&format!(" AND time_us < ${}", next()));
        binds.push(Bind::Int(v));
    }
    if let Some(p) = &filter.party {
        let (a, b, c) = (next(), next(), next());
        sql.push_str(&format!(
            " AND (actor_party = ${a} OR from_party = ${b} OR to_party = ${c})"
        ));
        for _ in 0..3 {
            binds.push(Bind::Text(p.clone()));
        }
    }
    for (column, value) in [
        ("msg_type", &filter.msg_type),
        ("decision", &filter.decision),
        ("subject", &filter.subject),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ${}", next()));
            binds.push(Bind::Text(v.clone()));
        }
    }
    if !filter.actions.is_empty() {
        let marks: Vec<String> = filter
            .actions
            .iter()
            .map(|a| {
                binds.push(Bind::Text(a.clone()));
                format!("${}", next())
            })
            .collect();
        sql.push_str(&format!(" AND action IN ({})", marks.join(", ")));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", next()));
    binds.push(Bind::Int(to_i64(limit + 1)));
    (sql, binds)
}

enum Bind {
    Int(i64),
    Text(String),
}

/// Records `from_seq..=to_seq`, at most `limit`, in seq order (export).
pub async fn leaves_range(
    store: &Store,
    from_seq: u64,
    to_seq: u64,
    limit: u64,
) -> Result<Vec<StoredLeaf>, QueryError> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, leaf FROM audit_records WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    )
    .bind(to_i64(from_seq))
    .bind(to_i64(to_seq))
    .bind(to_i64(limit))
    .fetch_all(store.pool())
    .await?;
    rows.into_iter()
        .map(|(seq, leaf)| {
            Ok(StoredLeaf {
                seq: to_u64(seq)?,
                leaf,
            })
        })
        .collect()
}

/// The newest signed tree head, if any.
pub async fn latest_head(store: &Store) -> Result<Option<StoredHead>, QueryError> {
    let row: Option<(i64, Vec<u8>, i64, String)> = sqlx::query_as(
        "SELECT tree_size, root_hash, time_us, checkpoint FROM tree_heads \
         ORDER BY tree_size DESC LIMIT 1",
    )
    .fetch_optional(store.pool())
    .await?;
    row.map(head_from_row).transpose()
}

/// Every signed tree head, smallest first (the verifier).
pub async fn all_heads(store: &Store) -> Result<Vec<StoredHead>, QueryError> {
    let rows: Vec<(i64, Vec<u8>, i64, String)> = sqlx::query_as(
        "SELECT tree_size, root_hash, time_us, checkpoint FROM tree_heads ORDER BY tree_size",
    )
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(head_from_row).collect()
}

fn head_from_row(
    (size, root, time_us, checkpoint): (i64, Vec<u8>, i64, String),
) -> Result<StoredHead, QueryError> {
    Ok(StoredHead {
        tree_size: to_u64(size)?,
        root_hash: Hash::try_from(root)
            .map_err(|_| QueryError::Malformed("a tree head root is not 32 bytes"))?,
        time_us,
        checkpoint,
    })
}

/// The stored perfect-subtree hashes `ids`, fetched in one query.
pub async fn nodes(store: &Store, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, QueryError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let clauses: Vec<String> = (0..ids.len())
        .map(|i| format!("(level = ${} AND idx = ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "SELECT level, idx, hash FROM merkle_nodes WHERE {}",
        clauses.join(" OR ")
    );
    let mut q = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(&sql);
    for id in ids {
        q = q.bind(i64::from(id.level)).bind(to_i64(id.index));
    }
    for (level, idx, hash) in q.fetch_all(store.pool()).await? {
        let id = NodeId {
            level: u32::try_from(level).map_err(|_| QueryError::Malformed("node level"))?,
            index: to_u64(idx)?,
        };
        let hash = Hash::try_from(hash)
            .map_err(|_| QueryError::Malformed("a node hash is not 32 bytes"))?;
        out.insert(id, hash);
    }
    Ok(out)
}

/// The API view of a record: exactly the fields of its leaf, plus `leaf`
/// (standard base64 of the leaf bytes), so that a client verifies it per
/// DESIGN §9/§10: the record without `leaf`, in JCS, is the leaf. A leaf
/// that is not a JSON object (a damaged database) is shown as `{seq, leaf}`
/// so that exports carry it to the verifier unchanged.
pub fn record_json(stored: &StoredLeaf) -> Value {
    let mut obj = match serde_json::from_slice::<Value>(&stored.leaf) {
        Ok(Value::Object(m)) => m,
        _ => {
            let mut m = Map::new();
            m.insert("seq".into(), Value::from(stored.seq));
            m
        }
    };
    obj.insert("leaf".into(), Value::String(STANDARD.encode(&stored.leaf)));
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            after: 17,
            until: 900,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v1:9:3")), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v1:-1:3")), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v2:1:3")), None);
    }

    #[test]
    fn a_record_view_is_its_leaf_plus_leaf() {
        let leaf = br#"{"seq":3,"action":"x"}"#.to_vec();
        let v = record_json(&StoredLeaf {
            seq: 3,
            leaf: leaf.clone(),
        });
        assert_eq!(v["seq"], 3);
        assert_eq!(v["leaf"], STANDARD.encode(&leaf));
        let mut rest = v.as_object().unwrap().clone();
        rest.remove("leaf");
        assert_eq!(
            serde_json_canonicalizer::to_vec(&rest).unwrap(),
            serde_json_canonicalizer::to_vec(&serde_json::from_slice::<Value>(&leaf).unwrap())
                .unwrap()
        );
        let broken = record_json(&StoredLeaf {
            seq: 4,
            leaf: b"\xff".to_vec(),
        });
        assert_eq!(broken["seq"], 4);
    }
}
