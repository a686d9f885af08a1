-- 001_init.sql: the write model. Applied once, in a transaction, by state-processor at start.

-- The versioned rows: one per aggregate, version bumped by every applied command.
CREATE TABLE aggregates (
    tenant      text        NOT NULL,
    type        text        NOT NULL,
    id          text        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    state       jsonb,                       -- NULL once deleted
    deleted     boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, type, id)
);

-- Every command seen, keyed by id; the idempotency key is unique per tenant.
CREATE TABLE commands (
    id              uuid        PRIMARY KEY,
    tenant          text        NOT NULL,
    idempotency_key text        NOT NULL,
    type            text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    request_hash    text,
    status          text        NOT NULL CHECK (status IN ('accepted', 'applied', 'rejected')),
    http_status     int,
    result          jsonb,
    version         bigint,
    kafka_partition int,
    kafka_offset    bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (tenant, idempotency_key)
);

-- The outbox: exactly one domain event per applied command, id = (aggregate, version).
CREATE TABLE outbox (
    tenant         text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    event_type     text        NOT NULL,
    command_id     uuid        NOT NULL,
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    PRIMARY KEY (tenant, aggregate_type, aggregate_id, version)
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

-- Consumed positions, committed in the same transaction as the changes they caused.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
