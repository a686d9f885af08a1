/* processor.h: the state-processor: consume commands, apply them in PostgreSQL, emit results. */
#ifndef CQRS_PROCESSOR_H
#define CQRS_PROCESSOR_H

#include "core/config.h"

#include <stdbool.h>

struct event_base;

/* The configuration of both modes of state-processor (the projector reads a subset). */
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

/* The configuration table of the processor (ended by a NULL row). */
extern const config_row processor_config_table[];

typedef struct processor processor;

/*
 * Builds the processor on base: loads the schemas, connects to PostgreSQL (asynchronously),
 * creates the producer and joins the consumer group. Migrations must already be applied.
 * Returns NULL with err on a configuration problem.
 */
processor *processor_new(struct event_base *base, const processor_config *cfg,
                         const config_props *kafka_props, char *err, size_t errlen);
/* The processor's metrics, as /metrics renders them (borrowed: lives as long as p). */
struct metrics *processor_metrics(processor *p);
/*
 * The processor's loop: txloop_stop() stops it after the batch in hand, once committed;
 * txloop_failed() says whether it stopped on its own for an operator to decide (a stored offset
 * that counts another log, under offsets.on_mismatch=fail).
 */
struct txloop *processor_loop(processor *p);
/* Flushes what is still to be produced, leaves the group and frees everything. */
void processor_free(processor *p);

#endif
