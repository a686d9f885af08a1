/* pgwait.c: a statement queued on a pgconn, then its event loop run until the answer. */
#include "ops/pgwait.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

static void on_answer(const pgconn_result *res, void *arg)
{
    pgwait *w = arg;
    w->done = true;
    w->status = pgconn_result_status(res);
    snprintf(w->sqlstate, sizeof(w->sqlstate), "%s", pgconn_result_sqlstate(res));
    snprintf(w->error, sizeof(w->error), "%s",
             w->status == PGCONN_DISCONNECTED ? "connection lost" : pgconn_result_error(res));
    w->affected = pgconn_result_affected(res);
    w->rows = json_array();
    for (int i = 0; i < pgconn_result_ntuples(res); i++) {
        json_t *row = json_array();
        for (int k = 0; k < pgconn_result_nfields(res); k++) {
            const char *v = pgconn_result_value(res, i, k);
            json_array_append_new(row, v ? json_string(v) : json_null());
        }
        json_array_append_new(w->rows, row);
    }
}

int pgwait_run(pgwait *w, struct event_base *base, pgconn *pg, const char *sql, int n,
               const char *const *v, const bool *stop)
{
    pgwait_clear(w);
    if (stop && *stop)
        return -1;
    if (pgconn_query(pg, sql, n, v, on_answer, w) != 0) {
        w->done = true;
        w->status = PGCONN_ERROR;
        snprintf(w->error, sizeof(w->error), "PostgreSQL queue full");
        return -1;
    }
    while (!w->done && !(stop && *stop))
        event_base_loop(base, EVLOOP_ONCE);
    return w->done && w->status == PGCONN_OK ? 0 : -1;
}

const char *pgwait_cell(const pgwait *w, size_t row, size_t col)
{
    return json_string_value(json_array_get(json_array_get(w->rows, row), col));
}

size_t pgwait_rows(const pgwait *w)
{
    return json_array_size(w->rows);
}

void pgwait_clear(pgwait *w)
{
    json_decref(w->rows);
    memset(w, 0, sizeof(*w));
}
