/*
 * pgwait.h: one statement on a pgconn, waited for by running its event loop: for operator tools
 * that run their steps in order (the loop meanwhile serves their signals and timers).
 */
#ifndef CQRS_PGWAIT_H
#define CQRS_PGWAIT_H

#include "pg/pgconn.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;

/* The outcome of the last statement, its rows copied out of the pgconn result. */
typedef struct pgwait {
    bool done; /* answered: the fields below are set */
    pgconn_status status;
    char sqlstate[6];
    char error[400]; /* PostgreSQL's message, or "connection lost" */
    long long affected;
    json_t *rows; /* [[text or null, ...], ...]; owned, released by the next run or clear */
} pgwait;

/*
 * Queues sql (parameters as for pgconn_query()) on pg and runs base until it is answered, or
 * until *stop is true (stop may be NULL; a signal or timer callback sets it and breaks the
 * loop). Returns 0 when answered with success, -1 otherwise (w->done tells whether it was
 * answered, and then how). A wait given up leaves the query queued: w must then outlive pg,
 * whose pgconn_free() answers it, and must not be run again before that.
 */
int pgwait_run(pgwait *w, struct event_base *base, pgconn *pg, const char *sql, int n,
               const char *const *v, const bool *stop) __attribute__((warn_unused_result));
/* The text at row, col of the last answer; NULL for SQL NULL or no such cell. Borrowed. */
const char *pgwait_cell(const pgwait *w, size_t row, size_t col);
/* The number of rows of the last answer. */
size_t pgwait_rows(const pgwait *w);
/* Releases the rows; w may be run again. */
void pgwait_clear(pgwait *w);

#endif
