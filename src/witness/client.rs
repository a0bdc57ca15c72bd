//! The gateway side of the witnesses (DESIGN §12): every new checkpoint goes to every
//! configured witness, each in its own background task, with a consistency proof from the
//! size that witness last cosigned; valid cosignatures are stored in
//! `tree_head_cosignatures` and served with the tree head.
//!
//! The seam with the audit writer is a `watch` channel of signed head sizes
//! ([`crate::audit::log::AuditLog::subscribe_heads`]); each task also polls the database now
//! and then, so heads signed by other instances (PostgreSQL scale-out) are sent too. A
//! witness that is down only delays its own task: retries back off exponentially
//! (1 s to 60 s, full jitter) and switch to the newest head when one arrives.
//!
//! A refusal by a witness (422 for a tree it saw with another root or a proof that does
//! not verify, or a witness that has cosigned a larger tree than the log has) means
//! the log was forked or rolled back: it is logged at error level and counted in
//! `samgate_witness_refusals_total{witness, reason}`. `samgate_witness_cosignature_age_seconds`
//! tells per witness how old its newest cosignature is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::protocol::{AddCheckpoint, SIZE_CONTENT_TYPE};
use crate::audit::cosign::{self, WitnessKey};
use crate::audit::proof;
use crate::audit::query::{self, StoredHead};
use crate::config::Config;
use crate::store::Store;

/// How often each task looks for heads signed elsewhere and refreshes the age metric.
const POLL: Duration = Duration::from_secs(5);
/// First retry delay after a failed attempt.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Largest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Per-request timeout towards a witness.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Target {
    name: String,
    url: String,
    key: WitnessKey,
    http: reqwest::Client,
}

struct Inner {
    targets: Vec<Target>,
    quorum: usize,
    wait: Duration,
    /// Per witness: the largest head size for which an attempt has ended (cosigned,
    /// refused, or failed once), so that a waiting tree-head request can stop waiting.
    attempted: Mutex<HashMap<String, u64>>,
    changed: Notify,
}

/// The witnesses of a gateway; cheap to clone.
#[derive(Clone)]
pub struct Cosigning {
    inner: Arc<Inner>,
}

impl Cosigning {
    /// Loads the witness keys and builds the HTTPS clients (the gateway's outbound client
    /// certificate is presented).
    pub fn from_config(config: &Config) -> Result<Cosigning, String> {
        let s = &config.server;
        let mut targets = Vec::new();
        for (i, w) in config.witnesses.iter().enumerate() {
            let key = WitnessKey::load(&w.public_key, Some(&w.name))
                .map_err(|e| format!("witness[{i}].public_key: {e}"))?;
            let ca = w.ca.as_ref().unwrap_or(&s.outbound_ca);
            let tls =
                crate::tls::client_config(ca, &s.outbound_certificate, &s.outbound_private_key)
                    .map_err(|e| format!("witness[{i}]: {e}"))?;
            let http = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("witness[{i}]: {e}"))?;
            targets.push(Target {
                name: w.name.clone(),
                url: format!("{}/add-checkpoint", w.url.trim_end_matches('/')),
                key,
                http,
            });
        }
        Ok(Cosigning {
            inner: Arc::new(Inner {
                targets,
                quorum: config.audit.witness_quorum,
                wait: config.audit.witness_wait,
                attempted: Mutex::new(HashMap::new()),
                changed: Notify::new(),
            }),
        })
    }

    /// Whether any witness is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.targets.is_empty()
    }

    /// The configured quorum.
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    /// The witness keys.
    pub fn keys(&self) -> Vec<WitnessKey> {
        self.inner.targets.iter().map(|t| t.key.clone()).collect()
    }

    /// Starts one submission task per witness.
    pub fn spawn(&self, store: &Store, heads: &watch::Receiver<u64>) -> Vec<JoinHandle<()>> {
        (0..self.inner.targets.len())
            .map(|i| {
                let task = Task {
                    inner: self.inner.clone(),
                    index: i,
                    store: store.clone(),
                };
                tokio::spawn(task.run(heads.clone()))
            })
            .collect()
    }

    /// The stored cosignature lines of the head of `tree_size`: (witness, line), by name.
    pub async fn stored(
        &self,
        store: &Store,
        tree_size: u64,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT witness, cosignature FROM tree_head_cosignatures WHERE tree_size = $1 ORDER BY witness",
        )
        .bind(i64::try_from(tree_size).unwrap_or(i64::MAX))
        .fetch_all(store.pool())
        .await?;
        let known: Vec<&str> = self.inner.targets.iter().map(|t| t.name.as_str()).collect();
        Ok(rows
            .into_iter()
            .filter(|(w, _)| known.contains(&w.as_str()))
            .collect())
    }

    /// Waits (at most `[audit] witness_wait`) until the head of `tree_size` has a quorum of
    /// cosignatures or every witness has answered or failed for it.
    pub async fn await_head(&self, store: &Store, tree_size: u64) {
        if self.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.inner.wait;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let have = self.stored(store, tree_size).await.map_or(0, |v| v.len());
            if have >= self.inner.quorum.max(1) || self.all_attempted(tree_size) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    fn all_attempted(&self, tree_size: u64) -> bool {
        let Ok(map) = self.inner.attempted.lock() else {
            return true;
        };
        self.inner
            .targets
            .iter()
            .all(|t| map.get(&t.name).is_some_and(|s| *s >= tree_size))
    }

    /// The tree head as served: `{tree_size, root_hash, time, checkpoint, cosigned_by}` with
    /// the stored cosignature lines appended to the checkpoint.
    pub async fn head_json(&self, store: &Store, head: &StoredHead) -> Value {
        let lines = self.stored(store, head.tree_size).await.unwrap_or_default();
        let mut v = head.to_json();
        let checkpoint =
            cosign::append_lines(&head.checkpoint, lines.iter().map(|(_, l)| l.as_str()));
        if let Some(obj) = v.as_object_mut() {
            obj.insert("checkpoint".into(), Value::String(checkpoint));
            obj.insert(
                "cosigned_by".into(),
                Value::Array(lines.into_iter().map(|(w, _)| Value::String(w)).collect()),
            );
        }
        v
    }
}

struct Task {
    inner: Arc<Inner>,
    index: usize,
    store: Store,
}

/// How one attempt ended.
enum Attempt {
    /// Cosigned and stored.
    Cosigned,
    /// The witness has another size: retry from it.
    Size(u64),
    /// Refused for good (reported).
    Refused,
    /// Network or server trouble: retry later.
    Failed(String),
}

impl Task {
    fn target(&self) -> Option<&Target> {
        self.inner.targets.get(self.index)
    }

    async fn run(self, mut heads: watch::Receiver<u64>) {
        let Some(name) = self.target().map(|t| t.name.clone()) else {
            return;
        };
        // The witness's size as far as we know it (it corrects us with a 409).
        let mut known = self.last_cosigned().await.map(|(s, _)| s).unwrap_or(0);
        let mut done = 0u64;
        let mut backoff = BACKOFF_INITIAL;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut poll = tokio::time::interval(POLL);
        loop {
            let head = query::latest_head(&self.store).await.ok().flatten();
            let due = retry_at.is_none_or(|t| tokio::time::Instant::now() >= t);
            if let Some(head) = head.filter(|h| h.tree_size > done && due) {
                match self.submit(&head, &mut known).await {
                    Attempt::Cosigned | Attempt::Refused => {
                        done = head.tree_size;
                        backoff = BACKOFF_INITIAL;
                        retry_at = None;
                    }
                    Attempt::Size(_) => continue, // a newer head exists: take it now
                    Attempt::Failed(e) => {
                        metrics::counter!("samgate_witness_errors_total", "witness" => name.clone()).increment(1);
                        tracing::warn!(witness = %name, error = %e, retry_in_ms = backoff.as_millis() as u64, "witness unreachable; retrying");
                        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64);
                        retry_at = Some(
                            tokio::time::Instant::now() + Duration::from_millis(jitter.max(100)),
                        );
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                self.mark_attempted(head.tree_size);
            }
            self.update_age().await;
            let sleep_until = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + POLL);
            tokio::select! {
                changed = heads.changed() => {
                    if changed.is_err() {
                        // The writer stopped: keep polling the database.
                        tokio::time::sleep(POLL).await;
                    } else {
                        retry_at = None; // a new head: try it now
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => {}
                _ = poll.tick() => {}
            }
        }
    }

    fn mark_attempted(&self, size: u64) {
        let Some(t) = self.target() else { return };
        if let Ok(mut map) = self.inner.attempted.lock() {
            let e = map.entry(t.name.clone()).or_insert(0);
            *e = (*e).max(size);
        }
        self.inner.changed.notify_waiters();
    }

    /// Submits `head`, following the witness's 409 answers (at most a few times).
    async fn submit(&self, head: &StoredHead, known: &mut u64) -> Attempt {
        let Some(t) = self.target() else {
            return Attempt::Refused;
        };
        let mut seen_sizes = Vec::new();
        for _ in 0..4 {
            if *known > head.tree_size {
                // The witness has cosigned a larger tree than this head. Benign if a newer
                // head exists (another instance signed it); otherwise the log lost records.
                let latest = query::latest_head(&self.store).await.ok().flatten();
                if latest.as_ref().is_some_and(|l| l.tree_size >= *known) {
                    return Attempt::Size(*known);
                }
                self.report("ahead", head.tree_size, *known);
                return Attempt::Refused;
            }
            let attempt = self.post(t, head, *known).await;
            match attempt {
                Attempt::Size(s) => {
                    if seen_sizes.contains(&s) && s == *known {
                        // It insists on the size we sent: same size, another root.
                        self.report("fork", head.tree_size, s);
                        return Attempt::Refused;
                    }
                    seen_sizes.push(s);
                    *known = s;
                }
                Attempt::Cosigned => {
                    *known = head.tree_size;
                    return Attempt::Cosigned;
                }
                other => return other,
            }
        }
        Attempt::Failed("the witness keeps changing its size".into())
    }

    async fn post(&self, t: &Target, head: &StoredHead, old: u64) -> Attempt {
        let proof = if old == 0 || old >= head.tree_size {
            Vec::new()
        } else {
            match self.consistency(old, head.tree_size).await {
                Ok(p) => p,
                Err(e) => return Attempt::Failed(format!("consistency proof: {e}")),
            }
        };
        let body = AddCheckpoint {
            old,
            proof,
            checkpoint: head.checkpoint.clone(),
        }
        .to_body();
        let rsp = match t.http.post(&t.url).body(body).send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(e.without_url().to_string()),
        };
        let status = rsp.status().as_u16();
        let ctype = rsp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = match rsp.text().await {
            Ok(t) => t,
            Err(e) => return Attempt::Failed(e.without_url().to_string()),
        };
        match status {
            200 => self.accept(t, head, &text).await,
            409 if ctype.starts_with(SIZE_CONTENT_TYPE) => {
                match text.trim_end_matches('\n').parse::<u64>() {
                    Ok(s) => Attempt::Size(s),
                    Err(_) => Attempt::Failed("409 without a tree size".into()),
                }
            }
            422 => {
                // Old size = our size: the witness holds another root for it (a fork).
                let reason = if old == head.tree_size {
                    "fork"
                } else {
                    "inconsistent"
                };
                self.report(reason, head.tree_size, old);
                Attempt::Refused
            }
            400 | 403 | 404 | 409 => {
                let reason = match status {
                    403 => "forbidden",
                    404 => "unknown_log",
                    409 => "conflict",
                    _ => "bad_request",
                };
                self.report(reason, head.tree_size, old);
                Attempt::Refused
            }
            s => Attempt::Failed(format!("HTTP {s}")),
        }
    }

    /// Verifies and stores the cosignature in a 200 answer.
    async fn accept(&self, t: &Target, head: &StoredHead, text: &str) -> Attempt {
        let Ok((note_text, _)) = cosign::split_note(&head.checkpoint) else {
            return Attempt::Failed("our checkpoint does not split".into());
        };
        let mut found = None;
        for line in text.lines() {
            let Ok(parsed) = cosign::parse_signature_line(line) else {
                continue;
            };
            match cosign::verify_line(note_text, &parsed, &t.key) {
                Ok(ts) => {
                    found = Some((line.to_owned(), ts));
                    break;
                }
                Err(cosign::CosignError::OtherKey) => {}
                Err(e) => return Attempt::Failed(e.to_string()),
            }
        }
        let Some((line, ts)) = found else {
            return Attempt::Failed("the answer has no valid cosignature of this witness".into());
        };
        let stored = sqlx::query(
            "INSERT INTO tree_head_cosignatures (tree_size, witness, cosignature, timestamp) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size, witness) DO NOTHING",
        )
        .bind(i64::try_from(head.tree_size).unwrap_or(i64::MAX))
        .bind(t.name.clone())
        .bind(line)
        .bind(i64::try_from(ts).unwrap_or(i64::MAX))
        .execute(self.store.pool())
        .await;
        if let Err(e) = stored {
            return Attempt::Failed(format!("storing the cosignature: {e}"));
        }
        metrics::counter!("samgate_witness_cosignatures_total", "witness" => t.name.clone())
            .increment(1);
        tracing::debug!(witness = %t.name, tree_size = head.tree_size, "cosigned");
        self.set_age(ts);
        Attempt::Cosigned
    }

    async fn consistency(
        &self,
        old: u64,
        size: u64,
    ) -> Result<Vec<crate::audit::merkle::Hash>, String> {
        let ids = proof::consistency_proof_nodes(old, size).map_err(|e| e.to_string())?;
        let nodes = query::nodes(&self.store, &ids)
            .await
            .map_err(|e| e.to_string())?;
        proof::consistency_proof(old, size, &nodes).map_err(|e| e.to_string())
    }

    fn report(&self, reason: &'static str, tree_size: u64, witness_size: u64) {
        let Some(t) = self.target() else { return };
        metrics::counter!("samgate_witness_refusals_total", "witness" => t.name.clone(), "reason" => reason).increment(1);
        tracing::error!(
            witness = %t.name,
            reason,
            tree_size,
            witness_size,
            "a witness refused our checkpoint: the audit log may have been forked or rolled back"
        );
    }

    async fn last_cosigned(&self) -> Option<(u64, u64)> {
        let t = self.target()?;
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tree_size, timestamp FROM tree_head_cosignatures WHERE witness = $1 \
             ORDER BY tree_size DESC LIMIT 1",
        )
        .bind(t.name.clone())
        .fetch_optional(self.store.pool())
        .await
        .ok()
        .flatten();
        row.map(|(s, ts)| {
            (
                u64::try_from(s).unwrap_or(0),
                u64::try_from(ts).unwrap_or(0),
            )
        })
    }

    async fn update_age(&self) {
        if let Some((_, ts)) = self.last_cosigned().await {
            self.set_age(ts);
        }
    }

    fn set_age(&self, ts: u64) {
        let Some(t) = self.target() else { return };
        #[expect(
            clippy::disallowed_methods,
            reason = "the witness age metric is measured against the real time"
        )]
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        metrics::gauge!("samgate_witness_cosignature_age_seconds", "witness" => t.name.clone())
            .set(now.saturating_sub(ts) as f64);
    }
}
