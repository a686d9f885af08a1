/*
 * rebuild.h: `state-processor rebuild`: rebuilds one projection table from the events topic
 * while the live table keeps serving reads and the live projector keeps writing it. It builds a
 * shadow table with the live table's layout, reads the topic from the beginning (or from a time)
 * up to the high watermarks taken at the start, applying the projector's version-guarded upsert;
 * then, in one transaction that locks the live table, copies into the shadow what the live table
 * holds newer, and renames the shadow into place. A dry run compares instead of swapping.
 */
#ifndef CQRS_REBUILD_H
#define CQRS_REBUILD_H

#include "core/config.h"
#include "loop/procconfig.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* The rebuild's configuration: the keys it shares with the processor, then its own. */
typedef struct rebuild_config {
    processor_config proc; /* first, so that the shared rows' offsets are processor_config's */
    char *type;            /* the aggregate type whose projection is rebuilt */
    char *from_time;       /* RFC 3339; empty: from the beginning of the topic */
    long long from_time_slack_ms;
    bool dry_run;
    char *output;              /* auto, text or json */
    long long lock_timeout_ms; /* the swap's wait for the live table's lock, per attempt */
    long long swap_attempts;
} rebuild_config;

/* The configuration table of the rebuild (ended by a NULL row), filling a rebuild_config. */
extern const config_row rebuild_config_table[];

typedef enum { REBUILD_DONE = 0, REBUILD_FAILED, REBUILD_INTERRUPTED } rebuild_status;

/* What a rebuild did; examples is owned (json_decref). */
typedef struct rebuild_result {
    bool swapped;
    long long events_read;      /* events of the topic read, of every type */
    long long events_projected; /* of them, events of this type */
    long long events_skipped;   /* of them, events that cannot be projected (any type) */
    long long rows_changed;     /* shadow rows the events wrote (the version guard let through) */
    long long rows_refused;     /* rows PostgreSQL refused, left out (see the log) */
    long long rows_before_time; /* rows copied from the live table before from_time */
    long long rows_caught_up;   /* rows copied from the live table because newer there */
    long long rows;             /* rows of the rebuilt table */
    long long swap_attempts;    /* transactions tried for the swap */
    long long lock_held_ms;     /* how long the swap held the live table's lock */
    double elapsed_s;
    /* The comparison of a dry run, after the catch-up: what a swap would change. */
    long long differing, only_live, only_rebuilt, live_rows;
    char checksum_live[33], checksum_rebuilt[33];
    json_t *examples; /* up to 10 {tenant, id, live_version, rebuilt_version} */
} rebuild_result;

typedef struct rebuild rebuild;

/*
 * Prepares a rebuild: loads the domain files and checks cfg->type and cfg->from_time. Progress
 * goes to progress_out, as one updating line when tty, else as JSON lines. cfg and kafka_props
 * are borrowed until rebuild_free(). Returns NULL with err naming the key at fault.
 */
rebuild *rebuild_new(const rebuild_config *cfg, const config_props *kafka_props, FILE *progress_out,
                     bool tty, char *err, size_t errlen);
/*
 * Runs the rebuild to its end on an event loop of its own; SIGINT or SIGTERM interrupt it (the
 * shadow table is dropped). Blocking. Fills out (zeroed first); err holds the reason of a
 * failure. The shadow never outlives the call unless the process dies.
 */
rebuild_status rebuild_run(rebuild *r, rebuild_result *out, char *err, size_t errlen);
/* Frees everything; NULL is a no-op. */
void rebuild_free(rebuild *r);

#endif
