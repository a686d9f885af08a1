-- 003_projection_skipped.sql: events the projector cannot project, kept instead of stopping their partition.

-- One row per consumed message the projector could not apply (unparseable headers or value, unknown
-- aggregate type, bad version, or refused by PostgreSQL), written in the transaction that moves the
-- group's offset past it. Key and value are kept byte for byte: they need not be valid UTF-8.
CREATE TABLE projection_skipped (
    group_id     text        NOT NULL,
    topic        text        NOT NULL,
    partition    int         NOT NULL,
    kafka_offset bigint      NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    key          bytea,                       -- NULL when the message had none
    headers      jsonb       NOT NULL,        -- [{"name": .., "value": ..}] (name_hex / value_hex when not UTF-8)
    value        bytea,                       -- NULL for a message without a value
    skipped_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition, kafka_offset)
);
CREATE INDEX projection_skipped_at ON projection_skipped (skipped_at);
