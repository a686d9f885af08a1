/*
 * rebuildread.h: the reading step of a rebuild: the partitions of a topic read from their start
 * to their end offsets (progress_part), the events of one aggregate type written into a table
 * with the projector's version-guarded upsert, a few upserts in flight while the next batch is
 * read. Rows PostgreSQL refuses are written again one at a time, and those it refuses alone are
 * left out (logged and counted).
 */
#ifndef CQRS_REBUILDREAD_H
#define CQRS_REBUILDREAD_H

#include "domain/domain.h"
#include "kafka/kafka.h"
#include "pg/pgconn.h"
#include "ops/progress.h"
#include "domain/projection.h"

#include <stdbool.h>
#include <stddef.h>

struct event_base;

/* What the reading needs; everything is borrowed for the life of the rebuildread. */
typedef struct rebuildread_spec {
    struct event_base *base; /* the loop that pg and reader run on */
    pgconn *pg;
    kafka_consumer *reader;         /* a reader (kafka_consumer_new_reader()) not assigned */
    progress *prog;                 /* the partitions to read; their positions advance */
    const domain_registry *domains; /* to decode the events */
    const projection *proj;         /* the type written; the others are read and left */
    const char *upsert_sql;         /* $1 the rows of projbatch_rows(), $2 the type */
    const char *tenant_default;     /* of events that carry none */
    size_t batch_max;               /* most events per upsert */
    const bool *stop;               /* becomes true to give up (a signal) */
} rebuildread_spec;

typedef struct rebuildread_counts {
    long long events_read;      /* of every type, below the ends */
    long long events_projected; /* of them, of proj's type */
    long long events_skipped;   /* of them, events that cannot be projected (any type) */
    long long rows_changed;     /* rows the upserts changed (the version guard let through) */
    long long rows_refused;     /* rows PostgreSQL refused even alone */
} rebuildread_counts;

typedef struct rebuildread rebuildread;

/* Prepares the reading; spec is copied. Caller frees with rebuildread_free(). */
rebuildread *rebuildread_new(const rebuildread_spec *spec);
/*
 * Reads to the ends and waits for every upsert (blocking; runs spec->base). Returns 0, or -1
 * with err (a failed upsert, the connection lost) or when *stop became true.
 */
int rebuildread_run(rebuildread *rd, char *err, size_t errlen) __attribute__((warn_unused_result));
/* The figures so far. Borrowed from rd. */
const rebuildread_counts *rebuildread_figures(const rebuildread *rd);
/*
 * Frees rd. Upserts still queued on spec->pg refer to it: free the pgconn first (which answers
 * them), then rd. NULL is a no-op.
 */
void rebuildread_free(rebuildread *rd);

#endif
