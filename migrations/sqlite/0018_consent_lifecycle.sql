-- The consent lifecycle (DESIGN §13). Keep in step with
-- migrations/postgres/0018_consent_lifecycle.sql. Numbered after the issue
-- (#18) so that it cannot collide with migrations added by parallel work.

-- A representative who gave the consent for the participant (`given_by`):
-- the role in clear, the name sealed with the vault key (AAD
-- `consent-given-by\0<id>`), as it names a person close to the participant.
ALTER TABLE consents ADD COLUMN given_by_role TEXT;
ALTER TABLE consents ADD COLUMN given_by_name TEXT;
-- The population register's protected-identity marking (`protected_identity`).
ALTER TABLE consents ADD COLUMN protected_identity BIGINT NOT NULL DEFAULT 0;
-- The delivered `closure` that limited the consent to follow-up, when, and
-- the end of the follow-up period ([consent] follow_up_months after it).
ALTER TABLE consents ADD COLUMN closure_exchange_id TEXT;
ALTER TABLE consents ADD COLUMN closed_at_us BIGINT;
ALTER TABLE consents ADD COLUMN follow_up_until_us BIGINT;

-- How the subject travelled in an exchange (reveal | pseudonymise | omit),
-- so that a revocation notice names the consent and the subject in the form
-- the recipient received them.
ALTER TABLE exchanges ADD COLUMN subject_mode TEXT;
CREATE INDEX exchanges_consent ON exchanges (consent_id);
