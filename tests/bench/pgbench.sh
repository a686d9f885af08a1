#!/usr/bin/env bash
# Writes the pgbench script of the processor's transaction for BATCH commands to stdout:
#   pgbench.sh BATCH ACCOUNTS pipelined|sequential [consecutive|scattered]
# The statements are the processor's (state-processor/processor/processor.c), in its order: read the stored
# offsets, the known commands and the aggregates under lock; write the aggregates, the command
# records, the outbox and the offsets; commit. Their jsonb parameters, which the processor builds
# in C, are built here in SQL from BATCH accounts (bench-N): consecutive ones (the default), or
# scattered as tests/bench/fill.c scatters the deposits of the cost growth comparison (the Nth
# command of a run to account N * 2654435761 mod ACCOUNTS). Command ids are time-ordered like
# the gateway's (UUIDv7: the millisecond, then random bits). The outbox rows are written as
# published, so that a processor's relay sharing the database leaves them. The aggregates are read
# under lock inside the parameter of their update (pgbench cannot carry a result into a pipeline),
# so the aggregate rows are looked up twice per command, as the processor's read and update do.
# The outbox rows take their version from the sequence pgbench_version, which the caller creates.
# pipelined: the reads in one round trip and the writes with COMMIT in another, as the processor
# sends them; sequential: one statement per round trip.
set -euo pipefail

batch=$1 accounts=$2 mode=$3 order=${4:-consecutive}
start="" end=""
if [[ $mode == pipelined ]]; then
    start='\startpipeline'
    end='\endpipeline'
fi
# Accounts distinct within a transaction, as the processor's batch folds the commands to one
# aggregate into one row: first..first+batch-1 (mod ACCOUNTS), or those numbers times a multiplier
# prime to ACCOUNTS (mod ACCOUNTS), which permutes them.
case $order in
consecutive) n="(:first::bigint + g) % $accounts" ;;
scattered) n="(:first::bigint + g) * 2654435761 % $accounts" ;;
*)
    echo "pgbench.sh: the order is consecutive or scattered, not '$order'" >&2
    exit 2
    ;;
esac
ids="(SELECT 'bench-' || ($n) AS id, g FROM generate_series(1, $batch) g)"

cat <<EOF
\\set first random(0, $accounts - 1)
$start
BEGIN;
SELECT partition, next_offset FROM consumer_offsets WHERE group_id = 'pgbench' AND topic = 'commands' AND partition = ANY('{0}'::int[]) ORDER BY partition FOR UPDATE;
SELECT c.tenant, c.idempotency_key, c.id, c.status, c.http_status, c.result FROM commands c JOIN jsonb_to_recordset((SELECT jsonb_agg(jsonb_build_object('tenant', 'default', 'key', md5(random()::text), 'id', gen_random_uuid())) FROM generate_series(1, $batch))) AS k(tenant text, key text, id uuid) ON (c.tenant = k.tenant AND c.idempotency_key = k.key) OR c.id = k.id;
$end
$start
WITH x AS (SELECT * FROM jsonb_to_recordset((SELECT jsonb_agg(jsonb_build_object('tenant', a.tenant, 'type', a.type, 'id', a.id, 'prev_version', a.version, 'version', a.version + 1, 'state', jsonb_set(a.state, '{balance}', to_jsonb(coalesce((a.state->>'balance')::bigint, 0) + 1)), 'deleted', false)) FROM (SELECT a.* FROM aggregates a JOIN $ids k ON a.tenant = 'default' AND a.type = 'account' AND a.id = k.id ORDER BY a.tenant, a.type, a.id FOR UPDATE OF a) a)) AS x(tenant text, type text, id text, prev_version bigint, version bigint, state jsonb, deleted boolean)), upd AS (UPDATE aggregates a SET version = x.version, state = CASE WHEN x.deleted THEN NULL ELSE x.state END, deleted = x.deleted, updated_at = now() FROM x WHERE x.prev_version > 0 AND a.tenant = x.tenant AND a.type = x.type AND a.id = x.id AND a.version = x.prev_version RETURNING 1), ins AS (INSERT INTO aggregates (tenant, type, id, version, state, deleted) SELECT tenant, type, id, version, CASE WHEN deleted THEN NULL ELSE state END, deleted FROM x WHERE prev_version = 0 RETURNING 1) SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins);
INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, aggregate_id, status, http_status, result, version, kafka_partition, kafka_offset, finished_at) SELECT id, tenant, idempotency_key, type, aggregate_type, aggregate_id, status, http_status, result, version, partition, "offset", now() FROM jsonb_to_recordset((SELECT jsonb_agg(jsonb_build_object('id', (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid, 'tenant', 'default', 'idempotency_key', md5(random()::text), 'type', 'account.deposit', 'aggregate_type', 'account', 'aggregate_id', k.id, 'status', 'applied', 'http_status', 200, 'result', jsonb_build_object('balance', k.g, 'owner', 'owner'), 'version', k.g, 'partition', 0, 'offset', k.g)) FROM $ids k)) AS x(id uuid, tenant text, idempotency_key text, type text, aggregate_type text, aggregate_id text, status text, http_status int, result jsonb, version bigint, partition int, "offset" bigint) ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, http_status = EXCLUDED.http_status, result = EXCLUDED.result, version = EXCLUDED.version, kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset, finished_at = EXCLUDED.finished_at;
INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, command_id, payload, published_at) SELECT tenant, aggregate_type, aggregate_id, version, event_type, command_id, payload, now() FROM jsonb_to_recordset((SELECT jsonb_agg(jsonb_build_object('tenant', 'default', 'aggregate_type', 'account', 'aggregate_id', k.id, 'version', nextval('pgbench_version'), 'event_type', 'account.deposited', 'command_id', gen_random_uuid(), 'payload', jsonb_build_object('amount', 1, 'balance', k.g))) FROM $ids k)) AS x(tenant text, aggregate_type text, aggregate_id text, version bigint, event_type text, command_id uuid, payload jsonb);
INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) SELECT group_id, topic, partition, next_offset FROM jsonb_to_recordset(jsonb_build_array(jsonb_build_object('group_id', 'pgbench', 'topic', 'commands', 'partition', 0, 'next_offset', :first::bigint))) AS x(group_id text, topic text, partition int, next_offset bigint) ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now();
COMMIT;
$end
EOF
