//! Inclusion and consistency proofs of the audit tree: generation from stored perfect
//! subtrees and verification (RFC 9162 §2.1.3, §2.1.4; DESIGN §6, §9 "Tree heads").
//!
//! Generation runs in two phases so that the caller can fetch the nodes from an async
//! database in one query: `*_proof_nodes` lists the [`NodeId`]s needed, and `*_proof`
//! assembles the proof from any [`NodeSource`] holding them (e.g. a `HashMap` filled from the
//! query). Each proof element is the hash of a leaf range of the RFC recursion; a range that
//! is not itself a perfect aligned subtree is split at the largest power of two smaller than
//! its size until it is, which takes O(log n) lookups per element.
//!
//! Verification implements the RFC algorithms (their shared walk up the tree is `Walk`) and
//! first checks the proof length, so that a wrong-length proof gets its own error.

use super::merkle::{empty_root, node_hash, split_point, Hash, NodeId, NodeSource};

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// An inclusion proof was asked for, or checked against, a tree of size 0.
    #[error("the tree is empty")]
    EmptyTree,
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The leaf index (audit `seq - 1`).
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof's first size is larger than its second.
    #[error("first tree size {first} is larger than second tree size {second}")]
    SizesOutOfOrder {
        /// The older tree size.
        first: u64,
        /// The newer tree size.
        second: u64,
    },
    /// A perfect subtree needed for the proof is not in the node source.
    #[error("stored node (level {level}, index {index}) is missing")]
    MissingNode {
        /// Height of the missing node.
        level: u32,
        /// Index of the missing node in its level.
        index: u64,
    },
    /// The proof has the wrong number of hashes for these sizes and index.
    #[error("proof has {actual} hashes, expected {expected}")]
    WrongProofLength {
        /// Number of hashes the sizes and index call for.
        expected: usize,
        /// Number of hashes given.
        actual: usize,
    },
    /// The proof does not lead to the given root (for consistency: the second, newer root).
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    /// A consistency proof does not lead to the given first (older) root.
    #[error("the proof does not lead to the expected first root hash")]
    FirstRootMismatch,
}

/// A range of leaves `[start, end)` whose Merkle Tree Hash is one proof element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
}

/// The perfect subtree ids needed by [`inclusion_proof`] for the same arguments.
pub fn inclusion_proof_nodes(leaf_index: u64, tree_size: u64) -> Result<Vec<NodeId>, ProofError> {
    Ok(ranges_nodes(&inclusion_ranges(leaf_index, tree_size)?))
}

/// The RFC 9162 §2.1.3.1 audit path of leaf `leaf_index` in the tree of size `tree_size`,
/// from the leaf's sibling up to the root's child.
pub fn inclusion_proof(
    leaf_index: u64,
    tree_size: u64,
    source: &impl NodeSource,
) -> Result<Vec<Hash>, ProofError> {
    ranges_hashes(&inclusion_ranges(leaf_index, tree_size)?, source)
}

/// The perfect subtree ids needed by [`consistency_proof`] for the same arguments.
pub fn consistency_proof_nodes(first: u64, second: u64) -> Result<Vec<NodeId>, ProofError> {
    Ok(ranges_nodes(&consistency_ranges(first, second)?))
}

/// The RFC 9162 §2.1.4.1 consistency proof from tree size `first` to tree size `second`.
///
/// Empty when `first` is 0 or equals `second`: every tree extends the empty tree and itself.
pub fn consistency_proof(
    first: u64,
    second: u64,
    source: &impl NodeSource,
) -> Result<Vec<Hash>, ProofError> {
    ranges_hashes(&consistency_ranges(first, second)?, source)
}

/// The perfect subtree ids needed by [`tree_root`]: the frontier of a tree of `tree_size`.
pub fn tree_root_nodes(tree_size: u64) -> Vec<NodeId> {
    ranges_nodes(&whole_tree(tree_size))
}

/// The root of the (possibly earlier) tree of `tree_size` leaves, from stored nodes.
pub fn tree_root(tree_size: u64, source: &impl NodeSource) -> Result<Hash, ProofError> {
    match whole_tree(tree_size).first() {
        None => Ok(empty_root()),
        Some(range) => range_hash(*range, source),
    }
}

/// Checks that `leaf_hash` is leaf `leaf_index` of the tree of `tree_size` leaves with root
/// `root`, by the RFC 9162 §2.1.3.2 algorithm.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let expected = inclusion_ranges(leaf_index, tree_size)?.len();
    let wrong_length = || ProofError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length());
    }
    // tree_size > leaf_index >= 0, checked above
    let mut walk = Walk::new(leaf_index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        r = if walk.step().ok_or_else(wrong_length)? {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    }
    if walk.s_n != 0 || r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `second` leaves with root `second_root` extends the tree of
/// `first` leaves with root `first_root`, by the RFC 9162 §2.1.4.2 algorithm.
///
/// Beyond the RFC (which requires `0 < first < second`): for `first == 0` the proof must be
/// empty and `first_root` must be [`empty_root`]; for `first == second` the proof must be
/// empty and the roots equal.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let expected = consistency_ranges(first, second)?.len();
    let wrong_length = || ProofError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length());
    }
    if first == 0 {
        return if *first_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::FirstRootMismatch)
        };
    }
    if first == second {
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }

    // Step 2: a power-of-two first tree is itself the proof's starting node.
    let mut path = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (start, rest) = path.split_first().ok_or_else(wrong_length)?;

    let mut walk = Walk::new(first - 1, second - 1);
    while walk.f_n & 1 == 1 {
        walk.up();
    }
    let mut f_r = *start;
    let mut s_r = *start;
    for c in rest {
        if walk.step().ok_or_else(wrong_length)? {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
        } else {
            s_r = node_hash(&s_r, c);
        }
    }
    if f_r != *first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if walk.s_n != 0 || s_r != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The position of both RFC 9162 verification walks (§2.1.3.2, §2.1.4.2):
/// `fn` and `sn`, moved up one level per proof hash.
struct Walk {
    f_n: u64,
    s_n: u64,
}

impl Walk {
    fn new(f_n: u64, s_n: u64) -> Self {
        Self { f_n, s_n }
    }

    fn up(&mut self) {
        self.f_n >>= 1;
        self.s_n >>= 1;
    }

    /// Takes the next proof hash: `Some(true)` when it is a left sibling
    /// (`LSB(fn)` set or `fn == sn`), `Some(false)` for a right one, `None`
    /// when the walk has already reached the root (the proof is too long).
    fn step(&mut self) -> Option<bool> {
        if self.s_n == 0 {
            return None;
        }
        let left = self.f_n & 1 == 1 || self.f_n == self.s_n;
        if left {
            // Skip the levels where the path runs along the right edge without a sibling.
            while self.f_n & 1 == 0 && self.f_n != 0 {
                self.up();
            }
        }
        self.up();
        Some(left)
    }
}

/// The leaf ranges of the audit path, bottom-up (RFC 9162 §2.1.3.1 `PATH(m, D_n)`).
fn inclusion_ranges(leaf_index: u64, tree_size: u64) -> Result<Vec<Range>, ProofError> {
    if tree_size == 0 {
        return Err(ProofError::EmptyTree);
    }
    if leaf_index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index: leaf_index,
            size: tree_size,
        });
    }
    // Walk down from the root; each step records the sibling of the half holding the leaf.
    let (mut start, mut end) = (0, tree_size);
    let mut top_down = Vec::new();
    while end - start > 1 {
        let mid = start + split_point(end - start);
        if leaf_index < mid {
            top_down.push(Range { start: mid, end });
            end = mid;
        } else {
            top_down.push(Range { start, end: mid });
            start = mid;
        }
    }
    top_down.reverse();
    Ok(top_down)
}

/// The leaf ranges of the consistency proof (RFC 9162 §2.1.4.1 `SUBPROOF(m, D_n, true)`).
fn consistency_ranges(first: u64, second: u64) -> Result<Vec<Range>, ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    // Invariant: start < first <= end; `whole` is the RFC's flag b (still the whole old tree).
    let (mut start, mut end, mut whole) = (0, second, true);
    let mut top_down = Vec::new();
    while first != end {
        let mid = start + split_point(end - start);
        if first <= mid {
            top_down.push(Range { start: mid, end });
            end = mid;
        } else {
            top_down.push(Range { start, end: mid });
            start = mid;
            whole = false;
        }
    }
    let mut ranges = Vec::with_capacity(top_down.len() + 1);
    if !whole {
        ranges.push(Range { start, end });
    }
    ranges.extend(top_down.into_iter().rev());
    Ok(ranges)
}

/// The single range of a whole tree, or none for the empty tree.
fn whole_tree(tree_size: u64) -> Vec<Range> {
    if tree_size == 0 {
        Vec::new()
    } else {
        vec![Range {
            start: 0,
            end: tree_size,
        }]
    }
}

fn ranges_nodes(ranges: &[Range]) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    for range in ranges {
        push_range_nodes(*range, &mut nodes);
    }
    nodes
}

fn ranges_hashes(ranges: &[Range], source: &impl NodeSource) -> Result<Vec<Hash>, ProofError> {
    ranges.iter().map(|r| range_hash(*r, source)).collect()
}

/// The range as one perfect aligned subtree, if it is one.
fn perfect(range: Range) -> Option<NodeId> {
    let n = range.end.checked_sub(range.start)?;
    if n.is_power_of_two() && range.start % n == 0 {
        let level = n.trailing_zeros();
        Some(NodeId {
            level,
            index: range.start >> level,
        })
    } else {
        None
    }
}

/// The RFC split of a non-perfect range of two or more leaves.
fn split(range: Range) -> (Range, Range) {
    let mid = range.start + split_point(range.end - range.start);
    (
        Range {
            start: range.start,
            end: mid,
        },
        Range {
            start: mid,
            end: range.end,
        },
    )
}

fn push_range_nodes(range: Range, out: &mut Vec<NodeId>) {
    if range.end <= range.start {
        return;
    }
    match perfect(range) {
        Some(id) => out.push(id),
        None => {
            let (left, right) = split(range);
            push_range_nodes(left, out);
            push_range_nodes(right, out);
        }
    }
}

/// The Merkle Tree Hash of a non-empty range, from perfect subtrees in `source`.
fn range_hash(range: Range, source: &impl NodeSource) -> Result<Hash, ProofError> {
    // Proof ranges are never empty; refuse rather than recurse without end if one were.
    if range.end <= range.start {
        return Err(ProofError::EmptyTree);
    }
    match perfect(range) {
        Some(id) => source
            .node(id.level, id.index)
            .ok_or(ProofError::MissingNode {
                level: id.level,
                index: id.index,
            }),
        None => {
            let (left, right) = split(range);
            Ok(node_hash(
                &range_hash(left, source)?,
                &range_hash(right, source)?,
            ))
        }
    }
}

#[cfg(test)]
mod tests;
