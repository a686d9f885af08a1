-- 005_abandoned_claims_and_outbox_retention.sql: what lets the processor bound the tables that
-- only grew (ADR 0020).

-- A claim left 'accepted' for longer than idempotency.abandon_after_s is marked 'abandoned': its
-- command may never have reached Kafka. It is not a decision: if the command arrives after all,
-- the processor applies it, and a retry of its key takes the claim over (same command id).
-- Added NOT VALID then validated, so the check of the existing rows does not block writes.
ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check
    CHECK (status IN ('accepted', 'applied', 'rejected', 'abandoned')) NOT VALID;
ALTER TABLE commands VALIDATE CONSTRAINT commands_status_check;

-- The oldest accepted command (processor_oldest_accepted_seconds, state-processor lag) and the
-- claims to abandon, without a scan.
CREATE INDEX commands_accepted_created_at ON commands (created_at) WHERE status = 'accepted';

-- Published outbox rows past outbox.retention_s are deleted in batches; unpublished ones never.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- The abandoned claims (processor_abandoned_commands, state-processor lag): few, counted by index.
CREATE INDEX commands_abandoned ON commands (finished_at) WHERE status = 'abandoned';
