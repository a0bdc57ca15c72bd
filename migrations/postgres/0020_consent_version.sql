-- The consent cache's version guard (issue 15). Keep in step with
-- migrations/sqlite/0020_consent_version.sql. (0019 belongs to
-- parallel work on revocation notices.)

-- A change counter on every consent row, bumped in the same transaction as
-- every change that can alter an exchange's consent decision: a revocation
-- and a closure bump their own row; recording a new consent bumps every
-- other consent of the same subject (the new one may be chosen instead, and
-- its protected-identity marking applies to the person). The exchange path
-- may decide from a per-process cache of a subject's consents; its
-- `exchange-forwarded` record is then written with a guard
-- (`UPDATE consents SET version = version WHERE id = $1 AND version = $2`)
-- that refuses the item when the chosen consent moved since it was read.
ALTER TABLE consents ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
