//! `POST /add-checkpoint` (C2SP tlog-witness): the request body, the checks in the order
//! the spec gives them, and the answer.
//!
//! | case | status |
//! |---|---|
//! | body not `old <n>`, proof lines, blank line, checkpoint; more than 63 proof lines | 400 |
//! | checkpoint origin not configured | 404 |
//! | no valid signature by the log's key | 403 |
//! | old size larger than the checkpoint's size | 400 |
//! | old size is not the stored size | 409, body `<stored size>\n`, `text/x.tlog.size` |
//! | same size as stored, another root (a fork) | 422 |
//! | size 0 with another root than the empty tree's | 422 |
//! | consistency proof does not verify (or is not empty for old size 0) | 422 |
//! | otherwise | 200, the cosignature line |
//!
//! Refusals are logged with the origin, sizes and reason only (checkpoints carry no
//! personal data); one with a valid log signature is also kept in the store as evidence.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::store::{Advance, Step, WitnessStore};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::cosign::{self, WitnessKey};
use crate::audit::merkle::Hash;
use crate::audit::proof;
use crate::keys::Ed25519Signer;

/// The most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// Content type of a 409 body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A parsed `add-checkpoint` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The old size line.
    pub old: u64,
    /// The consistency proof.
    pub proof: Vec<Hash>,
    /// The checkpoint note (with its signatures).
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body for this submission.
    pub fn to_body(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        for h in &self.proof {
            out.push_str(&STANDARD.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a body; the error says what is malformed.
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, &'static str> {
        let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8")?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or("no blank line before the checkpoint")?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or("the first line must be `old <size>`")?;
        if old.is_empty()
            || !old.bytes().all(|b| b.is_ascii_digit())
            || (old.len() > 1 && old.starts_with('0'))
        {
            return Err("the old size is not a decimal without leading zeros");
        }
        let old: u64 = old.parse().map_err(|_| "the old size is too large")?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err("more than 63 consistency proof lines");
            }
            let hash = STANDARD
                .decode(line)
                .ok()
                .and_then(|b| Hash::try_from(b).ok())
                .ok_or("a proof line is not the base64 of 32 bytes")?;
            proof.push(hash);
        }
        if checkpoint.is_empty() {
            return Err("no checkpoint after the blank line");
        }
        Ok(AddCheckpoint {
            old,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }
}

/// An HTTP answer: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Answer {
        let mut body = body.into();
        body.push('\n');
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// A running witness: its key, the logs it knows and its store.
pub struct Witness {
    /// Its public identity.
    pub key: WitnessKey,
    signer: Ed25519Signer,
    logs: HashMap<String, [u8; 32]>,
    store: WitnessStore,
    /// Serialises check-and-store (the store's transaction makes it atomic on disk too).
    lock: tokio::sync::Mutex<()>,
}

impl Witness {
    /// A witness named `name` signing with `signer`, for `logs` (origin → Ed25519 key).
    pub fn new(
        name: &str,
        signer: Ed25519Signer,
        logs: HashMap<String, [u8; 32]>,
        store: WitnessStore,
    ) -> Result<Witness, String> {
        let key = WitnessKey::new(name, signer.public_key()).map_err(|e| e.to_string())?;
        Ok(Witness {
            key,
            signer,
            logs,
            store,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The store (tests, operators).
    pub fn store(&self) -> &WitnessStore {
        &self.store
    }

    /// Handles one `add-checkpoint` body.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Answer {
        let req = match AddCheckpoint::parse(body) {
            Ok(r) => r,
            Err(reason) => return self.refuse(400, None, reason),
        };
        let origin = req.checkpoint.split('\n').next().unwrap_or("").to_owned();
        let Some(log_key) = self.logs.get(&origin) else {
            return self.refuse(404, None, "unknown log origin");
        };
        let cp = match Checkpoint::open(&req.checkpoint, &origin, log_key) {
            Ok(cp) => cp,
            Err(e) => {
                use crate::audit::checkpoint::CheckpointError as E;
                let status = match e {
                    E::NoSignatureForKey | E::BadSignature | E::Unsigned => 403,
                    _ => 400,
                };
                return self.refuse(status, Some(&origin), &e.to_string());
            }
        };
        if req.old > cp.tree_size {
            return self.refuse(
                400,
                Some(&origin),
                "the old size is larger than the checkpoint's",
            );
        }
        let now = unix_now();
        let outcome = {
            let _guard = self.lock.lock().await;
            self.store
                .advance(
                    &Step {
                        origin: &origin,
                        old: req.old,
                        size: cp.tree_size,
                        root: &cp.root_hash,
                        checkpoint: &req.checkpoint,
                        now,
                    },
                    |latest| check_consistency(&req, &cp, latest.map(|l| &l.root_hash)),
                )
                .await
        };
        let (status, reason) = match outcome {
            Err(e) => {
                tracing::error!(witness = %self.key.name, error = %e, "witness store failed");
                return Answer::text(503, "the witness store is unavailable");
            }
            Ok(Advance::Stored) => return self.cosign(&cp, now),
            Ok(Advance::Conflict(stored)) => {
                // The ordinary way a client learns the stored size: not evidence of anything.
                tracing::info!(witness = %self.key.name, %origin, old = req.old, stored, "old size does not match");
                return Answer {
                    status: 409,
                    content_type: SIZE_CONTENT_TYPE,
                    body: format!("{stored}\n"),
                };
            }
            Ok(Advance::Fork(_)) => {
                // C2SP tlog-witness: old size = checkpoint size with another root is 422.
                let reason = "another root for the stored tree size (a fork)".to_owned();
                (Answer::text(422, reason.clone()), reason)
            }
            Ok(Advance::Inconsistent(reason)) => (Answer::text(422, reason.clone()), reason),
        };
        tracing::warn!(
            witness = %self.key.name,
            %origin,
            old = req.old,
            tree_size = cp.tree_size,
            status = status.status,
            reason = %reason,
            "refused a signed checkpoint"
        );
        if let Err(e) = self
            .store
            .refused(
                &origin,
                req.old,
                cp.tree_size,
                status.status,
                &reason,
                &req.checkpoint,
                now,
            )
            .await
        {
            tracing::error!(witness = %self.key.name, error = %e, "could not record a refusal");
        }
        status
    }

    fn cosign(&self, cp: &Checkpoint, now: i64) -> Answer {
        let ts = u64::try_from(now).unwrap_or(0);
        match cosign::cosign(&cp.body(), &self.key.name, &self.key.public_key, ts, |m| {
            self.signer.sign(m)
        }) {
            Ok(line) => {
                tracing::info!(witness = %self.key.name, origin = %cp.origin, tree_size = cp.tree_size, "cosigned");
                Answer {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: line,
                }
            }
            Err(e) => Answer::text(500, e.to_string()),
        }
    }

    fn refuse(&self, status: u16, origin: Option<&str>, reason: &str) -> Answer {
        tracing::warn!(witness = %self.key.name, origin = origin.unwrap_or("-"), status, reason, "refused a checkpoint");
        Answer::text(status, reason)
    }
}

/// The consistency check of a request against the stored root (`None`: a new log).
fn check_consistency(
    req: &AddCheckpoint,
    cp: &Checkpoint,
    stored_root: Option<&Hash>,
) -> Result<(), String> {
    // C2SP tlog-witness: a checkpoint of size 0 must have the root of the empty tree (422).
    if cp.tree_size == 0 && cp.root_hash != crate::audit::merkle::empty_root() {
        return Err("a checkpoint of size 0 must have the root of the empty tree".into());
    }
    match stored_root {
        None => {
            if req.proof.is_empty() {
                Ok(())
            } else {
                Err("the proof must be empty when the old size is 0".into())
            }
        }
        Some(old_root) => {
            if req.old == cp.tree_size {
                return if req.proof.is_empty() {
                    Ok(())
                } else {
                    Err("the proof must be empty for an unchanged tree".into())
                };
            }
            proof::verify_consistency(req.old, cp.tree_size, old_root, &cp.root_hash, &req.proof)
                .map_err(|e| format!("the consistency proof does not verify ({e})"))
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "C2SP cosignature timestamps are the real time of cosigning"
)]
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of the witnesses: a size-0 checkpoint with another root than the empty
    /// tree's was stored and cosigned (and then wedged the log: no later proof from it can
    /// verify). The spec wants 422.
    #[test]
    fn a_size_zero_checkpoint_must_have_the_empty_root() {
        let req = AddCheckpoint {
            old: 0,
            proof: vec![],
            checkpoint: String::new(),
        };
        let bogus = Checkpoint::new("t", 0, [7u8; 32]);
        assert!(check_consistency(&req, &bogus, None).is_err());
        let empty = Checkpoint::new("t", 0, crate::audit::merkle::empty_root());
        assert_eq!(check_consistency(&req, &empty, None), Ok(()));
    }

    #[test]
    fn bodies_round_trip_and_malformed_ones_are_named() {
        let req = AddCheckpoint {
            old: 5,
            proof: vec![[1u8; 32], [2u8; 32]],
            checkpoint: "o\n7\nAAAA\n\n\u{2014} o AAAA\n".into(),
        };
        assert_eq!(AddCheckpoint::parse(req.to_body().as_bytes()).unwrap(), req);
        for bad in [
            "old 05\n\ncp\n",
            "old -1\n\ncp\n",
            "new 5\n\ncp\n",
            "old 5\nnot base64!\n\ncp\n",
            "old 5\n",
            "old 5\n\n",
        ] {
            assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let many = format!(
            "old 1\n{}\ncp\n",
            format!("{}\n", STANDARD.encode([0u8; 32])).repeat(64)
        );
        assert_eq!(
            AddCheckpoint::parse(many.as_bytes()),
            Err("more than 63 consistency proof lines")
        );
    }
}
