-- 008_aggregates_fillfactor.sql: room on each page of aggregates for its rows' next versions.

-- Every applied command rewrites its aggregate's row; no indexed column changes, so the new
-- version can be a heap-only tuple (HOT): written on the same page, with no new entry in the
-- primary key. That needs free space on the page. Packed full (the default fillfactor of 100),
-- a page has none until a later visit prunes its dead versions, so the first update of each
-- row after it was written goes to another page and adds a key to the B-tree: with many
-- aggregates, almost every update is one of those. 80 leaves a fifth of each page for them
-- (ADR 0032). It applies to pages written from now on; a table that needs its existing pages
-- rewritten gets that from VACUUM FULL or pg_repack, which this migration does not run.
ALTER TABLE aggregates SET (fillfactor = 80);
