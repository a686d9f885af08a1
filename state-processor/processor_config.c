/* processor_config.c: the configuration keys of the processor and of the projector, with bounds. */
#include "processor.h"
#include "projector.h"

#include <stddef.h>

#define CFG(field) offsetof(processor_config, field)

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
     "how often expired command records are deleted"},
    {ROW_TOPICS_PARTITIONS},
    {ROW_TOPICS_REPLICATION},
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
    {NULL, 0, 0, NULL, 0, 0, NULL},
};
