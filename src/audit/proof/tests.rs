//! Proof tests: the RFC 6962/9162 vectors of certificate-transparency-go and
//! transparency-dev/merkle, exhaustive checks for small trees, and property tests.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::audit::merkle::{leaf_hash, root_from_leaves, Frontier};

fn h(hex_str: &str) -> Hash {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

/// The eight leaves of the RFC 6962 reference test suites.
fn reference_leaves() -> Vec<Hash> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|d| leaf_hash(&hex::decode(d).unwrap()))
    .collect()
}

/// Known roots of the reference trees of sizes 1..=8.
const REFERENCE_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference_root(size: u64) -> Hash {
    h(REFERENCE_ROOTS[size as usize - 1])
}

/// Builds the store an audit log would have after appending `leaves`.
fn store(leaves: &[Hash]) -> HashMap<NodeId, Hash> {
    let mut frontier = Frontier::new();
    let mut nodes = HashMap::new();
    for leaf in leaves {
        for node in frontier.push(*leaf).unwrap() {
            assert!(
                nodes.insert(node.id(), node.hash).is_none(),
                "node stored twice"
            );
        }
    }
    nodes
}

fn numbered_leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

#[test]
fn reference_roots_match_for_sizes_1_to_8() {
    let leaves = reference_leaves();
    let nodes = store(&leaves);
    let mut frontier = Frontier::new();
    for size in 1..=8u64 {
        frontier.push(leaves[size as usize - 1]).unwrap();
        assert_eq!(
            root_from_leaves(&leaves[..size as usize]),
            reference_root(size)
        );
        assert_eq!(frontier.root(), reference_root(size));
        assert_eq!(tree_root(size, &nodes).unwrap(), reference_root(size));
    }
    assert_eq!(tree_root(0, &nodes).unwrap(), empty_root());
}

/// (leaf index, tree size, audit path) from transparency-dev/merkle `proof/verify_test.go`
/// (which numbers leaves from 1; these are 0-based).
fn reference_inclusion_proofs() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// (first, second, proof) from the same test suite.
fn reference_consistency_proofs() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

#[test]
fn reference_inclusion_proofs_are_generated_and_verify() {
    let leaves = reference_leaves();
    let nodes = store(&leaves);
    for (index, size, want) in reference_inclusion_proofs() {
        let proof = inclusion_proof(index, size, &nodes).unwrap();
        assert_eq!(proof, want, "inclusion proof ({index}, {size})");
        let root = reference_root(size);
        verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
    }
}

#[test]
fn reference_consistency_proofs_are_generated_and_verify() {
    let nodes = store(&reference_leaves());
    for (first, second, want) in reference_consistency_proofs() {
        let proof = consistency_proof(first, second, &nodes).unwrap();
        assert_eq!(proof, want, "consistency proof ({first}, {second})");
        let (r1, r2) = (reference_root(first), reference_root(second));
        verify_consistency(first, second, &r1, &r2, &proof).unwrap();
    }
}

#[test]
fn corrupted_reference_inclusion_proofs_fail() {
    let leaves = reference_leaves();
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, proof) in reference_inclusion_proofs() {
        let leaf = leaves[index as usize];
        let root = reference_root(size);
        let mut probes: Vec<(u64, u64, Hash, Vec<Hash>, Hash)> = vec![
            (index.wrapping_sub(1), size, leaf, proof.clone(), root),
            (index + 1, size, leaf, proof.clone(), root),
            (index ^ 2, size, leaf, proof.clone(), root),
            (index, size * 2, leaf, proof.clone(), root),
            (index, size / 2, leaf, proof.clone(), root),
            (index, size, leaf_hash(b"WrongLeaf"), proof.clone(), root),
            (index, size, leaf, proof.clone(), empty_root()),
            (index, size, leaf, proof.clone(), some),
            (
                index,
                size,
                leaf,
                [proof.clone(), vec![root]].concat(),
                root,
            ),
            (
                index,
                size,
                leaf,
                [vec![root], proof.clone()].concat(),
                root,
            ),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 8;
            probes.push((index, size, leaf, wrong, root));
        }
        if !proof.is_empty() {
            probes.push((index, size, leaf, proof[..proof.len() - 1].to_vec(), root));
        }
        for (i, s, l, p, r) in probes {
            assert!(
                verify_inclusion(&l, i, s, &p, &r).is_err(),
                "({index}, {size}) probe ({i}, {s}) verified"
            );
        }
    }
}

#[test]
fn corrupted_reference_consistency_proofs_fail() {
    let wrong_root = leaf_hash(b"WrongRoot");
    for (first, second, proof) in reference_consistency_proofs() {
        if proof.is_empty() {
            continue;
        }
        let (r1, r2) = (reference_root(first), reference_root(second));
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (first - 1, second, r1, r2, proof.clone()),
            (first + 1, second, r1, r2, proof.clone()),
            (first ^ 2, second, r1, r2, proof.clone()),
            (first, second * 2, r1, r2, proof.clone()),
            (first, second / 2, r1, r2, proof.clone()),
            (first, second, wrong_root, r2, proof.clone()),
            (first, second, r1, wrong_root, proof.clone()),
            (first, second, r2, r1, proof.clone()),
            (first, second, r1, r2, vec![]),
            (first, second, r1, r2, [proof.clone(), vec![r1]].concat()),
            (first, second, r1, r2, [proof.clone(), vec![r2]].concat()),
            (first, second, r1, r2, [vec![r1], proof.clone()].concat()),
            (first, second, r1, r2, [vec![r2], proof.clone()].concat()),
            (
                first,
                second,
                r1,
                r2,
                [vec![proof[0]], proof.clone()].concat(),
            ),
            (first, second, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 16;
            probes.push((first, second, r1, r2, wrong));
        }
        for (f, s, a, b, p) in probes {
            assert!(
                verify_consistency(f, s, &a, &b, &p).is_err(),
                "({first}, {second}) probe ({f}, {s}) verified"
            );
        }
    }
}

#[test]
fn every_inclusion_and_consistency_proof_up_to_64_leaves_verifies() {
    let leaves = numbered_leaves(64);
    let nodes = store(&leaves);
    let roots: Vec<Hash> = (0..=64).map(|n| root_from_leaves(&leaves[..n])).collect();
    for size in 1..=64u64 {
        let root = roots[size as usize];
        assert_eq!(tree_root(size, &nodes).unwrap(), root);
        for index in 0..size {
            let ids = inclusion_proof_nodes(index, size).unwrap();
            // Fetch exactly the listed nodes, as the database layer will.
            let fetched: HashMap<NodeId, Hash> = ids.iter().map(|id| (*id, nodes[id])).collect();
            let proof = inclusion_proof(index, size, &fetched).unwrap();
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root)
                .unwrap_or_else(|e| panic!("inclusion ({index}, {size}): {e}"));
        }
        for first in 0..=size {
            let ids = consistency_proof_nodes(first, size).unwrap();
            let fetched: HashMap<NodeId, Hash> = ids.iter().map(|id| (*id, nodes[id])).collect();
            let proof = consistency_proof(first, size, &fetched).unwrap();
            let old = roots[first as usize];
            verify_consistency(first, size, &old, &root, &proof)
                .unwrap_or_else(|e| panic!("consistency ({first}, {size}): {e}"));
        }
    }
}

#[test]
fn proofs_need_only_logarithmically_many_nodes() {
    let size = (1u64 << 40) + 12_345;
    assert!(inclusion_proof_nodes(size - 1, size).unwrap().len() <= 2 * 41);
    assert!(inclusion_proof_nodes(77, size).unwrap().len() <= 2 * 41);
    assert!(consistency_proof_nodes(size / 3, size).unwrap().len() <= 2 * 41);
    assert!(tree_root_nodes(size).len() <= 41);
}

#[test]
fn invalid_arguments_get_their_own_errors() {
    let nodes = store(&numbered_leaves(4));
    assert_eq!(inclusion_proof(0, 0, &nodes), Err(ProofError::EmptyTree));
    assert_eq!(
        inclusion_proof(4, 4, &nodes),
        Err(ProofError::IndexOutOfRange { index: 4, size: 4 })
    );
    assert_eq!(
        consistency_proof(3, 2, &nodes),
        Err(ProofError::SizesOutOfOrder {
            first: 3,
            second: 2
        })
    );
    assert_eq!(
        inclusion_proof(0, 5, &nodes),
        Err(ProofError::MissingNode { level: 0, index: 4 })
    );
    let root = tree_root(4, &nodes).unwrap();
    let leaf = nodes[&NodeId { level: 0, index: 1 }];
    let proof = inclusion_proof(1, 4, &nodes).unwrap();
    assert_eq!(
        verify_inclusion(&leaf, 1, 4, &proof[..1], &root),
        Err(ProofError::WrongProofLength {
            expected: 2,
            actual: 1
        })
    );
    assert_eq!(
        verify_inclusion(&leaf, 1, 4, &proof, &empty_root()),
        Err(ProofError::RootMismatch)
    );
}

#[test]
fn trivial_consistency_needs_an_empty_proof_and_matching_roots() {
    let nodes = store(&numbered_leaves(3));
    let root = tree_root(3, &nodes).unwrap();
    verify_consistency(0, 0, &empty_root(), &empty_root(), &[]).unwrap();
    verify_consistency(0, 3, &empty_root(), &root, &[]).unwrap();
    verify_consistency(3, 3, &root, &root, &[]).unwrap();
    assert_eq!(
        verify_consistency(0, 3, &root, &root, &[]),
        Err(ProofError::FirstRootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &root, &empty_root(), &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &root, &root, &[root]),
        Err(ProofError::WrongProofLength {
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(
        verify_consistency(4, 3, &root, &root, &[]),
        Err(ProofError::SizesOutOfOrder {
            first: 4,
            second: 3
        })
    );
}

/// The left/right position of each audit path sibling, bottom-up: `true` = sibling on the left.
fn path_shape(index: u64, size: u64) -> Vec<bool> {
    inclusion_ranges(index, size)
        .unwrap()
        .iter()
        .map(|r| r.end <= index)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_proofs_verify_and_tampering_fails(
        size in 1u64..300,
        index_seed in any::<u64>(),
        first_seed in any::<u64>(),
        byte in 0usize..32,
        bit in 0u8..8,
    ) {
        let leaves = numbered_leaves(size);
        let nodes = store(&leaves);
        let root = root_from_leaves(&leaves);
        let index = index_seed % size;
        let leaf = leaves[index as usize];

        let proof = inclusion_proof(index, size, &nodes).unwrap();
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i][byte] ^= 1 << bit;
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
        }
        for other in [index.wrapping_sub(1), index + 1, index ^ 2, index ^ 1] {
            if other != index {
                prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
            }
        }
        // A proof commits to the path's shape, not to the size itself: another size passes
        // only if it gives this leaf the same path shape (the signed checkpoint binds the
        // size to the root). Sizes that change the shape must fail.
        for other in 1..=2 * size {
            if other != size && verify_inclusion(&leaf, index, other, &proof, &root).is_ok() {
                prop_assert_eq!(path_shape(index, other), path_shape(index, size));
            }
        }
        prop_assert!(verify_inclusion(&leaf, index, size * 2, &proof, &root).is_err());

        let first = first_seed % (size + 1);
        let old = root_from_leaves(&leaves[..first as usize]);
        let proof = consistency_proof(first, size, &nodes).unwrap();
        prop_assert!(verify_consistency(first, size, &old, &root, &proof).is_ok());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i][byte] ^= 1 << bit;
            prop_assert!(verify_consistency(first, size, &old, &root, &bad).is_err());
        }
        if first > 0 && first < size {
            for other in [first - 1, first + 1] {
                if other > 0 && other < size {
                    prop_assert!(verify_consistency(other, size, &old, &root, &proof).is_err());
                }
            }
        }
    }
}
