-- 007_outbox_published_cluster_index.sql: finding events published to another cluster.

-- Every relay start asks for the events published to another cluster than the current one (ADR
-- 0022); almost always there are none. With this index that question is two index range probes
-- (published_cluster < current, > current) instead of a scan of the whole outbox.
CREATE INDEX outbox_published_cluster ON outbox (published_cluster)
    WHERE published_cluster IS NOT NULL;
