/* processor_config.c: the configuration keys of the processor, with defaults and bounds. */
#include "processor/processor.h"

#include <stddef.h>

const config_row processor_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {ROW_SCHEMAS_DIR},
    {ROW_MIGRATIONS_DIR},
    {"group.id", CONFIG_STR, PROCCONFIG_AT(group_id), "state-processor", 0, 0,
     "consumer group of the processors"},
    {ROW_TENANT_DEFAULT},
    {ROW_LOG_LEVEL},
    {ROW_HTTP_HOST},
    {ROW_HTTP_PORT},
    {"batch.max", CONFIG_INT, PROCCONFIG_AT(batch_max), "500", 1, 100000,
     "most commands applied in one transaction"},
    {ROW_RETRY_MAX_MS},
    {ROW_STARTUP_TIMEOUT},
    {"idempotency.retention_s", CONFIG_INT, PROCCONFIG_AT(retention_s), "86400", 1, 315360000,
     "how long finished commands are kept: the window in which a key is answered again"},
    {"idempotency.purge_interval_s", CONFIG_INT, PROCCONFIG_AT(purge_interval_s), "60", 1, 86400,
     "how often expired command records and outbox rows are deleted, claims abandoned and the "
     "oldest accepted command measured"},
    {"idempotency.abandon_after_s", CONFIG_INT, PROCCONFIG_AT(abandon_after_s), "86400", 60,
     315360000,
     "age after which a command still accepted is marked abandoned (it may never have reached "
     "Kafka; it is still applied if it arrives); keep it well above "
     "idempotency.inflight_timeout_s and any lag you expect"},
    {"outbox.retention_s", CONFIG_INT, PROCCONFIG_AT(outbox_retention_s), "604800", 1, 315360000,
     "how long published outbox rows are kept (unpublished ones always are)"},
    {ROW_TOPICS_PARTITIONS},
    {ROW_TOPICS_REPLICATION},
    {ROW_OFFSETS_ON_MISMATCH},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};
