/*
 * processor_config.c: the configuration keys of every mode of state-processor (the processor, the
 * projector, the operator tools), with bounds.
 */
#include "ops/lagcmd.h"
#include "processor/processor.h"
#include "projector/projector.h"
#include "ops/rebuild/rebuild.h"

#include <stddef.h>

#define CFG(field)  offsetof(processor_config, field)
#define RCFG(field) offsetof(rebuild_config, field)
#define LCFG(field) offsetof(lag_config, field)

/* The tools' structs begin with a processor_config, so the shared rows below fit them too. */
_Static_assert(offsetof(rebuild_config, proc) == 0, "rebuild_config starts with the shared keys");
_Static_assert(offsetof(lag_config, proc) == 0, "lag_config starts with the shared keys");

/* Keys both modes have, written once so their defaults and help cannot drift apart. */
#define ROW_PG_CONNINFO                                                                            \
    "pg.conninfo", CONFIG_STR, CFG(pg_conninfo), "host=127.0.0.1 port=5432 dbname=cqrs", 0, 0,     \
        "libpq connection string of the write model"
#define ROW_TOPIC_PREFIX                                                                           \
    "topic.prefix", CONFIG_STR, CFG(topic_prefix), NULL, 0, 0,                                     \
        "prefix of the topic names (commands, events, replies, commands.dlq)"
#define ROW_SCHEMAS_DIR                                                                            \
    "schemas.dir", CONFIG_STR, CFG(schemas_dir), "schemas/domains", 0, 0,                          \
        "folder of the domain files"
#define ROW_MIGRATIONS_DIR                                                                         \
    "migrations.dir", CONFIG_STR, CFG(migrations_dir), "schemas/migrations", 0, 0,                 \
        "folder of the SQL migrations applied at start"
#define ROW_TENANT_DEFAULT                                                                         \
    "tenant.default", CONFIG_STR, CFG(tenant_default), "default", 0, 0,                            \
        "tenant of messages that carry none"
#define ROW_LOG_LEVEL                                                                              \
    "log.level", CONFIG_STR, CFG(log_level), "info", 0, 0, "debug, info, warn or error"
#define ROW_HTTP_HOST                                                                              \
    "http.host", CONFIG_STR, CFG(http_host), "127.0.0.1", 0, 0,                                    \
        "address of the health and metrics endpoint"
#define ROW_HTTP_PORT                                                                              \
    "http.port", CONFIG_INT, CFG(http_port), "-1", -1, 65535,                                      \
        "port of /healthz, /readyz, /metrics (-1: off, 0: any)"
#define ROW_RETRY_MAX_MS                                                                           \
    "retry.max_ms", CONFIG_INT, CFG(retry_max_ms), "5000", 10, 600000,                             \
        "longest backoff between retries of a failed batch"
#define ROW_STARTUP_TIMEOUT                                                                        \
    "pg.startup_timeout_s", CONFIG_INT, CFG(startup_timeout_s), "30", 0, 3600,                     \
        "how long start-up waits for PostgreSQL to run the migrations"
#define ROW_TOPICS_PARTITIONS                                                                      \
    "topics.partitions", CONFIG_INT, CFG(topics_partitions), "4", 1, 10000,                        \
        "partitions of the topics created at start when missing"
#define ROW_OFFSETS_ON_MISMATCH                                                                    \
    "offsets.on_mismatch", CONFIG_STR, CFG(offsets_on_mismatch), "reset", 0, 0,                    \
        "a stored offset that counts another log (another cluster, or beyond the partition's "     \
        "end): reset (read the partition from its beginning; duplicates are recognised) or fail "  \
        "(stop for an operator)"
#define ROW_TOPICS_REPLICATION                                                                     \
    "topics.replication", CONFIG_INT, CFG(topics_replication), "-1", -1, 100,                      \
        "replication factor of topics created at start (-1: the broker's default)"

const config_row processor_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {ROW_SCHEMAS_DIR},
    {ROW_MIGRATIONS_DIR},
    {"group.id", CONFIG_STR, CFG(group_id), "state-processor", 0, 0,
     "consumer group of the processors"},
    {ROW_TENANT_DEFAULT},
    {ROW_LOG_LEVEL},
    {ROW_HTTP_HOST},
    {ROW_HTTP_PORT},
    {"batch.max", CONFIG_INT, CFG(batch_max), "500", 1, 100000,
     "most commands applied in one transaction"},
    {ROW_RETRY_MAX_MS},
    {ROW_STARTUP_TIMEOUT},
    {"idempotency.retention_s", CONFIG_INT, CFG(retention_s), "86400", 1, 315360000,
     "how long finished commands are kept: the window in which a key is answered again"},
    {"idempotency.purge_interval_s", CONFIG_INT, CFG(purge_interval_s), "60", 1, 86400,
     "how often expired command records and outbox rows are deleted, claims abandoned and the "
     "oldest accepted command measured"},
    {"idempotency.abandon_after_s", CONFIG_INT, CFG(abandon_after_s), "86400", 60, 315360000,
     "age after which a command still accepted is marked abandoned (it may never have reached "
     "Kafka; it is still applied if it arrives); keep it well above "
     "idempotency.inflight_timeout_s and any lag you expect"},
    {"outbox.retention_s", CONFIG_INT, CFG(outbox_retention_s), "604800", 1, 315360000,
     "how long published outbox rows are kept (unpublished ones always are)"},
    {ROW_TOPICS_PARTITIONS},
    {ROW_TOPICS_REPLICATION},
    {ROW_OFFSETS_ON_MISMATCH},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

const config_row projector_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {ROW_SCHEMAS_DIR},
    {ROW_MIGRATIONS_DIR},
    {"projector.group", CONFIG_STR, CFG(projector_group), NULL, 0, 0,
     "consumer group of the projectors (empty: <topic.prefix>projector)"},
    {ROW_TENANT_DEFAULT},
    {ROW_LOG_LEVEL},
    {ROW_HTTP_HOST},
    {ROW_HTTP_PORT},
    {"batch.max", CONFIG_INT, CFG(batch_max), "500", 1, 100000,
     "most events projected in one transaction"},
    {ROW_RETRY_MAX_MS},
    {ROW_STARTUP_TIMEOUT},
    {ROW_TOPICS_PARTITIONS},
    {ROW_TOPICS_REPLICATION},
    {ROW_OFFSETS_ON_MISMATCH},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

const config_row rebuild_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {ROW_SCHEMAS_DIR},
    {"type", CONFIG_STR, RCFG(type), NULL, 0, 0,
     "the aggregate type whose projection table is rebuilt (required)"},
    {"from_time", CONFIG_STR, RCFG(from_time), NULL, 0, 0,
     "RFC 3339 time: rows last changed before it are copied from the live table, the events are "
     "read from the first offset at that time (empty: the whole topic)"},
    {"from_time.slack_ms", CONFIG_INT, RCFG(from_time_slack_ms), "60000", 0, 86400000,
     "events are read from this long before from_time, for clocks that differ between the "
     "processor (event times) and Kafka (message timestamps)"},
    {"dry_run", CONFIG_BOOL, RCFG(dry_run), "false", 0, 0,
     "build and compare only: report the rows a swap would change, then drop the shadow table"},
    {"output", CONFIG_STR, RCFG(output), "auto", 0, 0,
     "the result on stdout: auto (text on a terminal, else JSON), text or json"},
    {"batch.max", CONFIG_INT, CFG(batch_max), "1000", 1, 100000, "most events per upsert"},
    {"swap.lock_timeout_ms", CONFIG_INT, RCFG(lock_timeout_ms), "2000", 10, 600000,
     "how long the swap waits for the live table's lock (reads wait behind it meanwhile)"},
    {"swap.attempts", CONFIG_INT, RCFG(swap_attempts), "5", 1, 1000,
     "swap transactions tried when the lock does not come within swap.lock_timeout_ms"},
    {ROW_TENANT_DEFAULT},
    {ROW_LOG_LEVEL},
    {"pg.startup_timeout_s", CONFIG_INT, CFG(startup_timeout_s), "30", 1, 3600,
     "how long the first connection to PostgreSQL may take"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

const config_row lag_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {"group.id", CONFIG_STR, CFG(group_id), "state-processor", 0, 0,
     "consumer group of the processors (on the commands topic)"},
    {"projector.group", CONFIG_STR, CFG(projector_group), NULL, 0, 0,
     "consumer group of the projectors, on the events topic (empty: <topic.prefix>projector)"},
    {"output", CONFIG_STR, LCFG(output), "auto", 0, 0,
     "auto (a table on a terminal, else JSON), text or json"},
    {"json", CONFIG_BOOL, LCFG(json), "false", 0, 0, "deprecated: the same as --output=json"},
    {"timeout_ms", CONFIG_INT, LCFG(timeout_ms), "10000", 100, 600000,
     "how long each look-up in Kafka or PostgreSQL may take"},
    {ROW_LOG_LEVEL},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};
