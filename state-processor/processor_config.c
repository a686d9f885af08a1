/* processor_config.c: the processor's configuration keys, their defaults and their bounds. */
#include "processor.h"

#include <stddef.h>

#define CFG(field) offsetof(processor_config, field)
const config_row processor_config_table[] = {
    {"pg.conninfo", CONFIG_STR, CFG(pg_conninfo), "host=127.0.0.1 port=5432 dbname=cqrs", 0, 0,
     "libpq connection string of the write model"},
    {"topic.prefix", CONFIG_STR, CFG(topic_prefix), NULL, 0, 0,
     "prefix of the topic names (commands, events, replies, commands.dlq)"},
    {"schemas.dir", CONFIG_STR, CFG(schemas_dir), "schemas/domains", 0, 0,
     "folder of the domain files"},
    {"migrations.dir", CONFIG_STR, CFG(migrations_dir), "schemas/migrations", 0, 0,
     "folder of the SQL migrations applied at start"},
    {"group.id", CONFIG_STR, CFG(group_id), "state-processor", 0, 0,
     "consumer group of the processors"},
    {"tenant.default", CONFIG_STR, CFG(tenant_default), "default", 0, 0,
     "tenant of commands that carry none"},
    {"log.level", CONFIG_STR, CFG(log_level), "info", 0, 0, "debug, info, warn or error"},
    {"http.host", CONFIG_STR, CFG(http_host), "127.0.0.1", 0, 0,
     "address of the health and metrics endpoint"},
    {"http.port", CONFIG_INT, CFG(http_port), "-1", -1, 65535,
     "port of /healthz, /readyz, /metrics (-1: off, 0: any)"},
    {"batch.max", CONFIG_INT, CFG(batch_max), "500", 1, 100000,
     "most commands applied in one transaction"},
    {"retry.max_ms", CONFIG_INT, CFG(retry_max_ms), "5000", 10, 600000,
     "longest backoff between retries of a failed batch"},
    {"pg.startup_timeout_s", CONFIG_INT, CFG(startup_timeout_s), "30", 0, 3600,
     "how long start-up waits for PostgreSQL to run the migrations"},
    {"idempotency.retention_s", CONFIG_INT, CFG(retention_s), "86400", 1, 315360000,
     "how long finished commands are kept: the window in which a key is answered again"},
    {"idempotency.purge_interval_s", CONFIG_INT, CFG(purge_interval_s), "60", 1, 86400,
     "how often expired command records are deleted"},
    {"topics.partitions", CONFIG_INT, CFG(topics_partitions), "4", 1, 10000,
     "partitions of the topics created at start when missing"},
    {"topics.replication", CONFIG_INT, CFG(topics_replication), "-1", -1, 100,
     "replication factor of topics created at start (-1: the broker's default)"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};
