/*
 * purge.h: retention of the rows that would otherwise only grow. On a timer, on its own
 * PostgreSQL connection: finished command records past their retention are deleted (their keys
 * may start new requests), published outbox rows past theirs too, and claims left 'accepted' for
 * longer than abandon_after_s are marked 'abandoned' (ADR 0020). Unfinished commands and
 * unpublished outbox rows are never deleted. It also measures the oldest accepted command.
 */
#ifndef CQRS_PURGE_H
#define CQRS_PURGE_H

#include "core/metrics.h"

#include <stddef.h>

struct event_base;
typedef struct purge purge;

/* Ages in seconds and how often the purge runs. */
typedef struct purge_config {
    long long retention_s;        /* finished command records: age of finished_at */
    long long outbox_retention_s; /* published outbox rows: age of published_at */
    long long abandon_after_s;    /* accepted commands: age of created_at */
    long long interval_s;
} purge_config;

/*
 * Starts purging every cfg->interval_s seconds (the first run right away), on its own PostgreSQL
 * connection so that it never runs inside the processor's transactions. Its gauges
 * (processor_oldest_accepted_seconds, processor_accepted_commands, processor_abandoned_commands)
 * go to m (borrowed, must outlive the purge). NULL with err when conninfo is invalid.
 */
purge *purge_new(struct event_base *base, const char *conninfo, const purge_config *cfg, metrics *m,
                 char *err, size_t errlen);
/* Rows deleted since start (command records and outbox rows). */
long long purge_deleted(const purge *p);
/* Stops and frees. */
void purge_free(purge *p);

#endif
