-- samgate schema v1 (SQLite). Keep in step with migrations/postgres/0001_init.sql.
-- Times are microseconds since the Unix epoch (UTC). No personnummer is stored in
-- clear anywhere: subjects are pseudonyms; the vault and sealed columns hold ciphertext.

-- The audit sequencer: one row, locked per group-commit batch. It holds the
-- next tree size and the Merkle frontier (right edge) after the last record.
CREATE TABLE audit_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    tree_size BIGINT  NOT NULL,
    frontier  BLOB    NOT NULL
);
-- The empty tree: size 0, frontier = 8-byte big-endian size and no hashes.
INSERT INTO audit_state (id, tree_size, frontier) VALUES (1, 0, X'0000000000000000');

CREATE TABLE audit_records (
    seq         BIGINT PRIMARY KEY,
    time_us     BIGINT NOT NULL,
    action      TEXT   NOT NULL,
    actor_party TEXT,
    from_party  TEXT,
    to_party    TEXT,
    msg_type    TEXT,
    subject     TEXT,
    exchange_id TEXT,
    consent_id  TEXT,
    decision    TEXT   NOT NULL,
    leaf        BLOB   NOT NULL
);
CREATE INDEX audit_records_subject ON audit_records (subject, seq);
CREATE INDEX audit_records_time ON audit_records (time_us);
CREATE INDEX audit_records_exchange ON audit_records (exchange_id);

-- Perfect Merkle subtree hashes (level 0 = leaf hashes), for O(log n) proofs.
CREATE TABLE merkle_nodes (
    level BIGINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BLOB   NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE tree_heads (
    tree_size  BIGINT PRIMARY KEY,
    root_hash  BLOB   NOT NULL,
    time_us    BIGINT NOT NULL,
    checkpoint TEXT   NOT NULL
);

CREATE TABLE consents (
    id                TEXT PRIMARY KEY,
    subject           TEXT   NOT NULL,
    issuer            TEXT   NOT NULL,
    key_id            TEXT   NOT NULL,
    parties           TEXT   NOT NULL,
    purposes          TEXT   NOT NULL,
    categories        TEXT   NOT NULL,
    method            TEXT   NOT NULL,
    recorded_by       TEXT   NOT NULL,
    not_before_us     BIGINT NOT NULL,
    expires_at_us     BIGINT NOT NULL,
    recorded_at_us    BIGINT NOT NULL,
    revoked_at_us     BIGINT,
    revocation_reason TEXT,
    token_key_id      TEXT   NOT NULL,
    token_nonce       BLOB   NOT NULL,
    token_sealed      BLOB   NOT NULL
);
CREATE INDEX consents_subject ON consents (subject);

CREATE TABLE vault (
    domain     TEXT NOT NULL,
    pseudonym  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (domain, pseudonym)
);

CREATE TABLE exchanges (
    id             TEXT PRIMARY KEY,
    sender         TEXT   NOT NULL,
    recipient      TEXT   NOT NULL,
    msg_type       TEXT   NOT NULL,
    purpose        TEXT   NOT NULL,
    delivery       TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    consent_id     TEXT,
    subject        TEXT,
    forwarded      TEXT   NOT NULL,
    withheld       TEXT   NOT NULL,
    created_at_us  BIGINT NOT NULL,
    delivered_at_us BIGINT
);

-- Async deliveries waiting to go out. The body is sealed with the vault key
-- (it may carry a revealed personnummer and health data) and removed once
-- delivered or expired.
CREATE TABLE outbox (
    exchange_id      TEXT PRIMARY KEY,
    endpoint         TEXT   NOT NULL,
    body_key_id      TEXT   NOT NULL,
    body_nonce       BLOB   NOT NULL,
    body_sealed      BLOB   NOT NULL,
    signature        TEXT   NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_us  BIGINT NOT NULL,
    expires_at_us    BIGINT NOT NULL,
    claimed_until_us BIGINT NOT NULL DEFAULT 0,
    -- The instance that holds the claim: outcomes are recorded only by it.
    claimed_by       TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX outbox_due ON outbox (next_attempt_us);

CREATE TABLE idempotency_keys (
    party          TEXT   NOT NULL,
    key            TEXT   NOT NULL,
    request_sha256 TEXT   NOT NULL,
    exchange_id    TEXT,
    status         BIGINT NOT NULL,
    response       TEXT   NOT NULL,
    created_at_us  BIGINT NOT NULL,
    PRIMARY KEY (party, key)
);
