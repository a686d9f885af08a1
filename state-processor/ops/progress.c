/* progress.c: progress figures of a bounded read and their terminal and JSON renderings. */
#include "ops/progress.h"

#include "core/xalloc.h"

#include <stdlib.h>

progress *progress_new(const char *task, const char *subject, size_t nparts)
{
    progress *p = xcalloc(1, sizeof(*p));
    p->task = task;
    p->subject = subject;
    p->phase = "starting";
    p->parts = xcalloc(nparts ? nparts : 1, sizeof(*p->parts));
    p->nparts = nparts;
    return p;
}

void progress_free(progress *p)
{
    if (!p)
        return;
    free(p->parts);
    free(p);
}

void progress_end_reached(progress *p, int partition)
{
    for (size_t i = 0; i < p->nparts; i++) {
        progress_part *q = &p->parts[i];
        if (q->partition == partition && q->position < q->end)
            q->position = q->end;
    }
}

bool progress_complete(const progress *p)
{
    for (size_t i = 0; i < p->nparts; i++)
        if (p->parts[i].position < p->parts[i].end)
            return false;
    return true;
}

long long progress_done(const progress *p)
{
    long long n = 0;
    for (size_t i = 0; i < p->nparts; i++) {
        const progress_part *q = &p->parts[i];
        long long upto = q->position < q->end ? q->position : q->end;
        n += upto > q->start ? upto - q->start : 0;
    }
    return n;
}

long long progress_total(const progress *p)
{
    long long n = 0;
    for (size_t i = 0; i < p->nparts; i++)
        n += p->parts[i].end > p->parts[i].start ? p->parts[i].end - p->parts[i].start : 0;
    return n;
}

/* Seconds of reading as of now_us. */
static double reading_s(const progress *p, long long now_us)
{
    if (!p->started_us)
        return 0;
    long long until = p->ended_us ? p->ended_us : now_us;
    return until > p->started_us ? (double)(until - p->started_us) / 1e6 : 0;
}

double progress_rate(const progress *p, long long now_us)
{
    double s = reading_s(p, now_us);
    return s > 0 ? (double)progress_done(p) / s : 0;
}

long long progress_eta_s(const progress *p, long long now_us)
{
    long long left = progress_total(p) - progress_done(p);
    if (left <= 0)
        return 0;
    double rate = progress_rate(p, now_us);
    return rate > 0 ? (long long)((double)left / rate + 0.5) : -1;
}

const char *progress_duration(long long s, char *buf, size_t len)
{
    if (s < 0)
        snprintf(buf, len, "?");
    else if (s >= 3600)
        snprintf(buf, len, "%lldh%02lldm%02llds", s / 3600, s / 60 % 60, s % 60);
    else if (s >= 60)
        snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
    else
        snprintf(buf, len, "%llds", s);
    return buf;
}

static double percent(const progress *p)
{
    long long total = progress_total(p);
    return total > 0 ? 100.0 * (double)progress_done(p) / (double)total : 100.0;
}

char *progress_text(const progress *p, long long now_us)
{
    char eta[32];
    return xasprintf("%s %s: %s  %lld/%lld events (%.1f%%)  %.0f events/s  ETA %s", p->task,
                     p->subject, p->phase, progress_done(p), progress_total(p), percent(p),
                     progress_rate(p, now_us),
                     progress_duration(progress_eta_s(p, now_us), eta, sizeof(eta)));
}

json_t *progress_json(const progress *p, long long now_us)
{
    json_t *parts = json_array();
    for (size_t i = 0; i < p->nparts; i++) {
        const progress_part *q = &p->parts[i];
        json_array_append_new(parts, json_pack("{s:i, s:I, s:I, s:I}", "partition", q->partition,
                                               "start", (json_int_t)q->start, "position",
                                               (json_int_t)q->position, "end", (json_int_t)q->end));
    }
    long long eta = progress_eta_s(p, now_us);
    /* Rounded to what a reader needs: no 17-digit floats in a progress line. */
    double rate = (double)(long long)(progress_rate(p, now_us) * 10 + 0.5) / 10;
    double pct = (double)(long long)(percent(p) * 10 + 0.5) / 10;
    double elapsed = (double)(long long)(reading_s(p, now_us) * 1000 + 0.5) / 1000;
    return json_pack("{s:s, s:s, s:s, s:s, s:f, s:I, s:I, s:f, s:f, s:o, s:o}", "type", "progress",
                     "task", p->task, "subject", p->subject, "phase", p->phase, "reading_s",
                     elapsed, "events_done", (json_int_t)progress_done(p), "events_total",
                     (json_int_t)progress_total(p), "percent", pct, "events_per_s", rate, "eta_s",
                     eta >= 0 ? json_integer(eta) : json_null(), "partitions", parts);
}

void progress_emit(const progress *p, FILE *f, bool tty, bool final, long long now_us)
{
    if (tty) {
        char *line = progress_text(p, now_us);
        /* Carriage return and erase-line: the line is rewritten in place. */
        fprintf(f, "\r\033[K%s%s", line, final ? "\n" : "");
        free(line);
    } else {
        json_t *j = progress_json(p, now_us);
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
        json_decref(j);
        if (s)
            fprintf(f, "%s\n", s);
        free(s);
    }
    fflush(f);
}
