/* procconfig.h: the configuration of state-processor, as every layer of it sees it. */
#ifndef CQRS_PROCCONFIG_H
#define CQRS_PROCCONFIG_H

#include "core/config.h"

#include <stddef.h>

/*
 * The keys every mode of state-processor shares (the processor reads them all, the projector and
 * the operator tools a subset, and the tools' own structs begin with one). The tables that fill
 * them are each in its mode's module, built from the rows below.
 */
typedef struct processor_config {
    char *pg_conninfo;
    char *topic_prefix;
    char *schemas_dir;
    char *migrations_dir;
    char *group_id;
    char *projector_group; /* the projector's group ("project" mode only) */
    char *tenant_default;
    char *log_level;
    char *http_host;
    long long http_port;
    long long batch_max;
    long long retry_max_ms;
    long long startup_timeout_s;
    long long topics_partitions;
    long long topics_replication;
    long long retention_s;
    long long purge_interval_s;
    long long outbox_retention_s;
    long long abandon_after_s;
    char *offsets_on_mismatch; /* "reset" or "fail" (ADR 0022) */
} processor_config;

/*
 * The rows of the shared keys, for the configuration tables of the modes (each in its module:
 * processor_config.c, projectcmd.c, rebuildcmd.c, lagcmd.c), written once so that their names,
 * defaults and help cannot drift apart. A mode's own struct begins with a processor_config, so
 * these offsets fit it too.
 */
#define PROCCONFIG_AT(field) offsetof(processor_config, field)

#define ROW_PG_CONNINFO                                                                            \
    "pg.conninfo", CONFIG_STR, PROCCONFIG_AT(pg_conninfo), "host=127.0.0.1 port=5432 dbname=cqrs", \
        0, 0, "libpq connection string of the write model"
#define ROW_TOPIC_PREFIX                                                                           \
    "topic.prefix", CONFIG_STR, PROCCONFIG_AT(topic_prefix), NULL, 0, 0,                           \
        "prefix of the topic names (commands, events, replies, commands.dlq)"
#define ROW_SCHEMAS_DIR                                                                            \
    "schemas.dir", CONFIG_STR, PROCCONFIG_AT(schemas_dir), "schemas/domains", 0, 0,                \
        "folder of the domain files"
#define ROW_MIGRATIONS_DIR                                                                         \
    "migrations.dir", CONFIG_STR, PROCCONFIG_AT(migrations_dir), "schemas/migrations", 0, 0,       \
        "folder of the SQL migrations applied at start"
#define ROW_TENANT_DEFAULT                                                                         \
    "tenant.default", CONFIG_STR, PROCCONFIG_AT(tenant_default), "default", 0, 0,                  \
        "tenant of messages that carry none"
#define ROW_LOG_LEVEL                                                                              \
    "log.level", CONFIG_STR, PROCCONFIG_AT(log_level), "info", 0, 0, "debug, info, warn or error"
#define ROW_HTTP_HOST                                                                              \
    "http.host", CONFIG_STR, PROCCONFIG_AT(http_host), "127.0.0.1", 0, 0,                          \
        "address of the health and metrics endpoint"
#define ROW_HTTP_PORT                                                                              \
    "http.port", CONFIG_INT, PROCCONFIG_AT(http_port), "-1", -1, 65535,                            \
        "port of /healthz, /readyz, /metrics (-1: off, 0: any)"
#define ROW_RETRY_MAX_MS                                                                           \
    "retry.max_ms", CONFIG_INT, PROCCONFIG_AT(retry_max_ms), "5000", 10, 600000,                   \
        "longest backoff between retries of a failed batch"
#define ROW_STARTUP_TIMEOUT                                                                        \
    "pg.startup_timeout_s", CONFIG_INT, PROCCONFIG_AT(startup_timeout_s), "30", 0, 3600,           \
        "how long start-up waits for PostgreSQL to run the migrations"
#define ROW_TOPICS_PARTITIONS                                                                      \
    "topics.partitions", CONFIG_INT, PROCCONFIG_AT(topics_partitions), "4", 1, 10000,              \
        "partitions of the topics created at start when missing"
#define ROW_OFFSETS_ON_MISMATCH                                                                    \
    "offsets.on_mismatch", CONFIG_STR, PROCCONFIG_AT(offsets_on_mismatch), "reset", 0, 0,          \
        "a stored offset that counts another log (another cluster, or beyond the partition's "     \
        "end): reset (read the partition from its beginning; duplicates are recognised) or fail "  \
        "(stop for an operator)"
#define ROW_TOPICS_REPLICATION                                                                     \
    "topics.replication", CONFIG_INT, PROCCONFIG_AT(topics_replication), "-1", -1, 100,            \
        "replication factor of topics created at start (-1: the broker's default)"

#endif
