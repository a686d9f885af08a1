-- 006_offsets_log.sql: a stored offset names the log it counts.

-- Kafka's cluster id when the offset was stored. An offset counts messages of one partition of
-- one cluster's topic: against a replaced cluster (a new mock cluster, a restored or rebuilt one)
-- it means nothing, and trusting it skips or waits on messages that do not exist. NULL: stored
-- before this column existed; such an offset is trusted once and rewritten with the id.
ALTER TABLE consumer_offsets ADD COLUMN cluster_id text;

-- The cluster whose events topic confirmed an outbox row. The events topic is the durable
-- domain log: a run on another cluster produces the rows of the old one again, so that the new
-- log holds every event (consumers deduplicate by event id). NULL: published before this column
-- existed, or by a cluster that did not name itself; such rows are not produced again.
ALTER TABLE outbox ADD COLUMN published_cluster text;
