/* rebuildread.c: a rebuild's reading: poll, decode, upsert with a few in flight, refused rows. */
#include "ops/rebuild/rebuildread.h"

#include "core/log.h"
#include "ops/pgwait.h"
#include "projector/projbatch.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INFLIGHT 4 /* upserts queued while the next batch is read */

/* One batch's upsert in flight; its rows are kept to be written again one by one if refused. */
typedef struct job {
    rebuildread *rd;
    char *rows;
    struct job *next;
} job;

struct rebuildread {
    rebuildread_spec s;
    rebuildread_counts n;
    kafka_message *msgs;
    job *inflight_jobs, *refused_jobs;
    size_t inflight;
    bool failed; /* an upsert failed: err holds why */
    char err[512];
    pgwait call; /* the single-row upserts of refused batches */
};

rebuildread *rebuildread_new(const rebuildread_spec *spec)
{
    rebuildread *rd = xcalloc(1, sizeof(*rd));
    rd->s = *spec;
    rd->msgs = xcalloc(spec->batch_max ? spec->batch_max : 1, sizeof(kafka_message));
    return rd;
}

const rebuildread_counts *rebuildread_figures(const rebuildread *rd)
{
    return &rd->n;
}

/* Errors about the data rather than the server: the same rows would be refused again. */
static bool data_error(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
           strncmp(sqlstate, "54", 2) == 0;
}

static void unlink_job(job **list, const job *j)
{
    for (job **p = list; *p; p = &(*p)->next) {
        if (*p == j) {
            *p = j->next;
            return;
        }
    }
}

static void on_upsert(const pgconn_result *res, void *arg)
{
    job *j = arg;
    rebuildread *rd = j->rd;
    rd->inflight--;
    unlink_job(&rd->inflight_jobs, j);
    if (pgconn_result_status(res) == PGCONN_OK) {
        rd->n.rows_changed += pgconn_result_ntuples(res);
        free(j->rows);
        free(j);
        return;
    }
    if (pgconn_result_status(res) == PGCONN_ERROR && data_error(pgconn_result_sqlstate(res))) {
        j->next = rd->refused_jobs; /* written again one row at a time, once reading is over */
        rd->refused_jobs = j;
        return;
    }
    if (!rd->failed)
        snprintf(rd->err, sizeof(rd->err), "upsert: %s",
                 pgconn_result_status(res) == PGCONN_DISCONNECTED ? "connection lost"
                                                                  : pgconn_result_error(res));
    rd->failed = true;
    free(j->rows);
    free(j);
}

static progress_part *part_of(const rebuildread *rd, int partition)
{
    for (size_t i = 0; i < rd->s.prog->nparts; i++)
        if (rd->s.prog->parts[i].partition == partition)
            return &rd->s.prog->parts[i];
    return NULL;
}

/* Upserts the messages of one poll that lie below their partition's end. */
static void take_batch(rebuildread *rd, size_t got)
{
    size_t keep = 0;
    for (size_t i = 0; i < got; i++) {
        progress_part *q = part_of(rd, rd->msgs[i].partition);
        if (q && rd->msgs[i].offset >= q->end && q->position < q->end)
            q->position = q->end; /* in order: everything below the end was delivered */
        if (!q || rd->msgs[i].offset >= q->end)
            continue; /* newer than the start: the catch-up takes it from the live table */
        if (rd->msgs[i].offset + 1 > q->position)
            q->position = rd->msgs[i].offset + 1;
        rd->msgs[keep++] = rd->msgs[i];
    }
    projbatch b = {0};
    projbatch_decode(&b, rd->s.domains, rd->msgs, keep, rd->s.tenant_default);
    kafka_consumer_release(rd->s.reader); /* the batch holds copies */
    rd->n.events_read += (long long)keep;
    rd->n.events_projected += (long long)projbatch_count(&b, rd->s.proj);
    rd->n.events_skipped += (long long)projbatch_skipped(&b);
    size_t count;
    char *rows = projbatch_rows(&b, rd->s.proj, &count);
    projbatch_clear(&b);
    if (count == 0) {
        free(rows);
        return;
    }
    job *j = xcalloc(1, sizeof(*j));
    j->rd = rd;
    j->rows = rows;
    const char *v[] = {rows, rd->s.proj->aggregate};
    if (pgconn_query(rd->s.pg, rd->s.upsert_sql, 2, v, on_upsert, j) != 0) {
        snprintf(rd->err, sizeof(rd->err), "upsert: PostgreSQL queue full");
        rd->failed = true;
        free(j->rows);
        free(j);
        return;
    }
    j->next = rd->inflight_jobs;
    rd->inflight_jobs = j;
    rd->inflight++;
}

static bool stopped(const rebuildread *rd)
{
    return rd->s.stop && *rd->s.stop;
}

/* Polls and upserts until every partition is read to its end. */
static int read_all(rebuildread *rd)
{
    progress *p = rd->s.prog;
    int *parts = xcalloc(p->nparts + 1, sizeof(int));
    long long *from = xcalloc(p->nparts + 1, sizeof(long long));
    size_t n = 0;
    for (size_t i = 0; i < p->nparts; i++) {
        if (p->parts[i].start < p->parts[i].end) {
            parts[n] = p->parts[i].partition;
            from[n++] = p->parts[i].start;
        }
    }
    int rc = n > 0 ? kafka_consumer_assign(rd->s.reader, parts, from, n) : 0;
    free(parts);
    free(from);
    if (rc != 0) {
        snprintf(rd->err, sizeof(rd->err), "cannot assign the partitions to read");
        return -1;
    }
    while (!progress_complete(p) && !rd->failed && !stopped(rd)) {
        if (rd->inflight < MAX_INFLIGHT) {
            size_t got = kafka_consumer_poll(rd->s.reader, rd->msgs, rd->s.batch_max);
            if (got > 0) {
                take_batch(rd, got);
                continue;
            }
            if (progress_complete(p)) /* the poll may have served the last ends of partitions */
                break;
        }
        event_base_loop(rd->s.base, EVLOOP_ONCE); /* a wake-up, an upsert's answer, a tick */
    }
    kafka_consumer_release(rd->s.reader);
    /* Stop fetching what is past the ends: an empty assignment. */
    if (kafka_consumer_assign(rd->s.reader, NULL, NULL, 0) != 0)
        log_warn("could not stop the reader");
    while (rd->inflight > 0 && !stopped(rd))
        event_base_loop(rd->s.base, EVLOOP_ONCE);
    return rd->failed || stopped(rd) ? -1 : 0;
}

static void log_refused(const json_t *row, const char *error)
{
    LOG_KV(LOG_ERROR, "PostgreSQL refused a row; it is left out of the rebuild",
           LOG_STR("tenant", json_string_value(json_object_get(row, "tenant"))),
           LOG_STR("id", json_string_value(json_object_get(row, "id"))),
           LOG_NUM("version", json_integer_value(json_object_get(row, "version"))),
           LOG_STR("error", error));
}

/* The rows of batches PostgreSQL refused, one at a time; the rows it refuses alone are left out. */
static int write_refused(rebuildread *rd)
{
    for (job *j; (j = rd->refused_jobs) && !stopped(rd);) {
        rd->refused_jobs = j->next;
        json_t *rows = json_loads(j->rows, 0, NULL);
        free(j->rows);
        free(j);
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            json_t *one = json_pack("[O]", row);
            char *text = json_dumps(one, JSON_COMPACT);
            json_decref(one);
            const char *v[] = {text, rd->s.proj->aggregate};
            int rc =
                pgwait_run(&rd->call, rd->s.base, rd->s.pg, rd->s.upsert_sql, 2, v, rd->s.stop);
            free(text);
            if (rc == 0) {
                rd->n.rows_changed += (long long)pgwait_rows(&rd->call);
            } else if (rd->call.done && data_error(rd->call.sqlstate)) {
                log_refused(row, rd->call.error);
                rd->n.rows_refused++;
            } else {
                if (rd->call.done)
                    snprintf(rd->err, sizeof(rd->err), "upsert: %s", rd->call.error);
                json_decref(rows);
                return -1;
            }
        }
        json_decref(rows);
    }
    return stopped(rd) ? -1 : 0;
}

int rebuildread_run(rebuildread *rd, char *err, size_t errlen)
{
    int rc = read_all(rd) == 0 && write_refused(rd) == 0 ? 0 : -1;
    if (rc != 0)
        snprintf(err, errlen, "%s", stopped(rd) ? "interrupted" : rd->err);
    return rc;
}

static void free_jobs(job *j)
{
    while (j) {
        job *next = j->next;
        free(j->rows);
        free(j);
        j = next;
    }
}

void rebuildread_free(rebuildread *rd)
{
    if (!rd)
        return;
    free_jobs(rd->inflight_jobs);
    free_jobs(rd->refused_jobs);
    pgwait_clear(&rd->call);
    free(rd->msgs);
    free(rd);
}
