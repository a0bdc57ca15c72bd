//! RFC 9162 Merkle tree hashing and the append-only frontier of the audit log (DESIGN §6).
//!
//! Everything here is pure: no I/O, no clock, no database. The audit log (`audit/log.rs`) keeps
//! one [`Frontier`] row and one row per [`Node`] returned by [`Frontier::push`]; the proof
//! functions in [`super::proof`] answer any inclusion or consistency proof from those rows.
//!
//! # Tree shape
//!
//! The tree over leaves `d[0..n)` is the RFC 9162 §2.1.1 Merkle Tree Hash: a range of more than
//! one leaf is split at the largest power of two smaller than its size. Every node of such a
//! tree either is a *perfect aligned subtree* — `2^level` leaves starting at a multiple of
//! `2^level`, identified by [`NodeId`] `{ level, index }` where `index = first leaf >> level` —
//! or is built from them. Perfect subtrees never change once complete, which is why storing
//! them is enough.

use std::collections::HashMap;

use ring::digest;

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain separation prefix of leaf hashes (RFC 9162 §2.1.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain separation prefix of interior node hashes (RFC 9162 §2.1.1).
const NODE_PREFIX: u8 = 0x01;
/// Bytes in the size prefix of [`Frontier::to_bytes`].
const SIZE_BYTES: usize = 8;

/// Errors of the frontier (the compact right edge of the tree).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrontierError {
    /// Stored frontier bytes are shorter than the 8-byte size prefix.
    #[error("frontier bytes too short: {len} bytes, need at least 8")]
    TooShort {
        /// Length of the bytes given.
        len: usize,
    },
    /// Stored frontier bytes do not hold exactly one hash per set bit of the size.
    #[error("frontier of size {size} needs {expected} bytes, got {actual}")]
    WrongLength {
        /// Tree size read from the prefix.
        size: u64,
        /// Length implied by the size.
        expected: usize,
        /// Length of the bytes given.
        actual: usize,
    },
    /// The tree already holds `u64::MAX` leaves.
    #[error("the tree is full")]
    Full,
}

/// `SHA-256(0x00 || leaf)`: the hash of one leaf's bytes (RFC 9162 §2.1.1).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(leaf);
    finish(ctx)
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// `SHA-256("")`: the root of the empty tree (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    finish(digest::Context::new(&digest::SHA256))
}

fn finish(ctx: digest::Context) -> Hash {
    let mut out = [0u8; 32];
    // SHA-256 digests are always 32 bytes, so the lengths match.
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The Merkle Tree Hash of `leaves` (already leaf-hashed), by the RFC 9162 §2.1.1 recursion.
///
/// This is the naive O(n) definition, kept independent of [`Frontier`] and the proof code so
/// that tests and the offline verifier can recompute everything from scratch.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [single] => *single,
        _ => {
            let k = split_point(leaves.len() as u64) as usize;
            let (left, right) = leaves.split_at(k);
            node_hash(&root_from_leaves(left), &root_from_leaves(right))
        }
    }
}

/// The largest power of two strictly smaller than `n`, for `n >= 2` (RFC 9162 `k`).
///
/// Returns 1 for `n < 2`, where no split happens.
pub(crate) fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 1;
    }
    1 << (63 - (n - 1).leading_zeros())
}

/// Identifies a perfect aligned subtree: the `2^level` leaves starting at `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves; 0 is a leaf hash.
    pub level: u32,
    /// Position among the nodes of this level, counting from 0 at the left.
    pub index: u64,
}

/// A completed perfect subtree and its hash, as returned by [`Frontier::push`] for storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Height above the leaves; 0 is a leaf hash.
    pub level: u32,
    /// Position among the nodes of this level, counting from 0 at the left.
    pub index: u64,
    /// The Merkle Tree Hash of the subtree.
    pub hash: Hash,
}

impl Node {
    /// The node's identity without its hash.
    pub fn id(&self) -> NodeId {
        NodeId {
            level: self.level,
            index: self.index,
        }
    }
}

/// Where the proof functions look up stored perfect-subtree hashes.
pub trait NodeSource {
    /// The hash of the perfect subtree `(level, index)`, or `None` if it is not stored.
    fn node(&self, level: u32, index: u64) -> Option<Hash>;
}

impl NodeSource for HashMap<NodeId, Hash> {
    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        self.get(&NodeId { level, index }).copied()
    }
}

impl<T: NodeSource + ?Sized> NodeSource for &T {
    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        (**self).node(level, index)
    }
}

/// The right edge of the tree: the roots of the perfect subtrees that make up a tree of
/// `size` leaves, largest (leftmost) first, one per set bit of `size` (so at most 64).
///
/// Appending needs only this, so the log keeps it in one row and updates it in the same
/// transaction as the record it appends (DESIGN §6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree roots, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash as leaf number `size()` and returns every perfect subtree it
    /// completes, bottom-up: the leaf itself at level 0, then each merged parent.
    ///
    /// A store that keeps every returned node can answer any proof with [`super::proof`].
    pub fn push(&mut self, leaf_hash: Hash) -> Result<Vec<Node>, FrontierError> {
        let leaf_index = self.size;
        let new_size = leaf_index.checked_add(1).ok_or(FrontierError::Full)?;
        let mut hash = leaf_hash;
        let mut nodes = vec![Node {
            level: 0,
            index: leaf_index,
            hash,
        }];
        // Each trailing one bit of the old size is a perfect subtree of that height that the
        // new leaf's subtree now completes into one twice as large.
        let merges = leaf_index.trailing_ones();
        for level in 1..=merges {
            // The invariant "one hash per set bit" guarantees a left sibling here; a
            // frontier that breaks it can only come from a bug, never from input.
            let Some(left) = self.hashes.pop() else {
                return Err(FrontierError::WrongLength {
                    size: self.size,
                    expected: encoded_len(self.size),
                    actual: SIZE_BYTES + self.hashes.len() * 32,
                });
            };
            hash = node_hash(&left, &hash);
            nodes.push(Node {
                level,
                index: leaf_index >> level,
                hash,
            });
        }
        self.hashes.push(hash);
        self.size = new_size;
        Ok(nodes)
    }

    /// The RFC 9162 Merkle Tree Hash of the whole tree, folding the frontier right to left.
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Encodes the frontier for one database row: the size as 8 bytes big-endian, then the
    /// subtree roots, largest first, 32 bytes each (`8 + 32 * popcount(size)` bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded_len(self.size));
        out.extend_from_slice(&self.size.to_be_bytes());
        for hash in &self.hashes {
            out.extend_from_slice(hash);
        }
        out
    }

    /// Decodes [`Frontier::to_bytes`], checking the length against the size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FrontierError> {
        let (prefix, rest) = bytes
            .split_first_chunk::<SIZE_BYTES>()
            .ok_or(FrontierError::TooShort { len: bytes.len() })?;
        let size = u64::from_be_bytes(*prefix);
        let expected = encoded_len(size);
        if bytes.len() != expected {
            return Err(FrontierError::WrongLength {
                size,
                expected,
                actual: bytes.len(),
            });
        }
        let hashes = rest
            .chunks_exact(32)
            .map(|chunk| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(chunk);
                hash
            })
            .collect();
        Ok(Self { size, hashes })
    }
}

fn encoded_len(size: u64) -> usize {
    SIZE_BYTES + size.count_ones() as usize * 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex_str: &str) -> Hash {
        let bytes = hex::decode(hex_str).unwrap();
        bytes.try_into().unwrap()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let want = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(empty_root(), want);
        assert_eq!(root_from_leaves(&[]), want);
        assert_eq!(Frontier::new().root(), want);
    }

    #[test]
    fn leaf_and_node_hashes_are_domain_separated() {
        // RFC 6962 test vector: the leaf hash of the empty leaf.
        assert_eq!(
            leaf_hash(b""),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut concat = vec![0x01];
        concat.extend_from_slice(&a);
        concat.extend_from_slice(&b);
        let direct = digest::digest(&digest::SHA256, &concat);
        assert_eq!(node_hash(&a, &b).as_slice(), direct.as_ref());
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        let cases = [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (u64::MAX, 1 << 63),
        ];
        for (n, k) in cases {
            assert_eq!(split_point(n), k, "n = {n}");
        }
    }

    #[test]
    fn push_returns_every_completed_subtree() {
        let mut frontier = Frontier::new();
        let leaves: Vec<Hash> = (0u8..8).map(|i| leaf_hash(&[i])).collect();
        let mut all = Vec::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let nodes = frontier.push(*leaf).unwrap();
            assert_eq!(nodes.len(), 1 + (i as u64).trailing_ones() as usize);
            all.extend(nodes);
        }
        // 8 leaves + 4 + 2 + 1 interior nodes.
        assert_eq!(all.len(), 15);
        let top = all.last().unwrap();
        assert_eq!(top.id(), NodeId { level: 3, index: 0 });
        assert_eq!(top.hash, root_from_leaves(&leaves));
        let pair = all.iter().find(|n| n.level == 1 && n.index == 2).unwrap();
        assert_eq!(pair.hash, node_hash(&leaves[4], &leaves[5]));
    }

    #[test]
    fn frontier_root_matches_naive_root_for_sizes_up_to_64() {
        let leaves: Vec<Hash> = (0u32..64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::new();
        for n in 1..=leaves.len() {
            frontier.push(leaves[n - 1]).unwrap();
            assert_eq!(frontier.size(), n as u64);
            assert_eq!(frontier.hashes().len(), n.count_ones() as usize);
            assert_eq!(frontier.root(), root_from_leaves(&leaves[..n]), "size {n}");
        }
    }

    #[test]
    fn frontier_bytes_round_trip() {
        let mut frontier = Frontier::new();
        for i in 0u32..13 {
            let bytes = frontier.to_bytes();
            assert_eq!(bytes.len(), 8 + 32 * i.count_ones() as usize);
            assert_eq!(Frontier::from_bytes(&bytes).unwrap(), frontier);
            frontier.push(leaf_hash(&i.to_be_bytes())).unwrap();
        }
        let restored = Frontier::from_bytes(&frontier.to_bytes()).unwrap();
        assert_eq!(restored.root(), frontier.root());
    }

    #[test]
    fn frontier_rejects_bad_bytes() {
        assert_eq!(
            Frontier::from_bytes(&[0; 7]),
            Err(FrontierError::TooShort { len: 7 })
        );
        let mut bytes = 3u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 32]);
        assert_eq!(
            Frontier::from_bytes(&bytes),
            Err(FrontierError::WrongLength {
                size: 3,
                expected: 72,
                actual: 40
            })
        );
        assert!(matches!(
            Frontier::from_bytes(&u64::MAX.to_be_bytes()),
            Err(FrontierError::WrongLength { .. })
        ));
    }

    #[test]
    fn a_full_tree_refuses_another_leaf() {
        let mut bytes = u64::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7; 64 * 32]);
        let mut frontier = Frontier::from_bytes(&bytes).unwrap();
        assert_eq!(frontier.push(leaf_hash(b"x")), Err(FrontierError::Full));
        assert_eq!(frontier.size(), u64::MAX);
    }
}
