-- Which exchanges a revocation notice has named (DESIGN §13). Keep in step
-- with migrations/sqlite/0019_revocation_notice_marks.sql.
--
-- One row per (consent, party, exchange) that a queued consent-revoked
-- notice names. A delivery that completes after the revocation read its
-- recipients (a delivery in flight, a sync exchange decided just before the
-- revocation) is found by a sweep and gets a notice of its own; the primary
-- key makes two sweeps that race name an exchange at most once.
CREATE TABLE revocation_notice_marks (
    consent_id TEXT NOT NULL,
    party TEXT NOT NULL,
    exchange_id TEXT NOT NULL,
    notice_id TEXT NOT NULL,
    PRIMARY KEY (consent_id, party, exchange_id)
);

-- An exchange whose message may have reached its recipient although no
-- delivery was recorded (an attempt that timed out or broke after sending,
-- or a delivery whose outcome could not be written): it counts as received
-- for revocation notices.
ALTER TABLE exchanges ADD COLUMN possibly_received BIGINT NOT NULL DEFAULT 0;

-- The parties that a delivered `closure` under a consent has told: after a
-- closure, a further closure goes only to a party not yet told (DESIGN §13).
CREATE TABLE consent_closures (
    consent_id TEXT NOT NULL,
    party TEXT NOT NULL,
    exchange_id TEXT NOT NULL,
    PRIMARY KEY (consent_id, party)
);

-- Revocation notices look up a consent's records (its consent-recorded
-- record, the replies passed under it); the housekeeping sweep looks for
-- replies by action.
CREATE INDEX audit_records_consent ON audit_records (consent_id, action);
