/*
 * progress.h: the progress of an operator task that reads partitions up to fixed end offsets:
 * done and total events, events per second, ETA, position per partition; rendered as one
 * updating line for a terminal or as one JSON object per line otherwise. No I/O but
 * progress_emit().
 */
#ifndef CQRS_PROGRESS_H
#define CQRS_PROGRESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

typedef struct progress_part {
    int partition;
    long long start;    /* first offset to read */
    long long position; /* next offset to read */
    long long end;      /* reading stops here (the high watermark taken at the start) */
} progress_part;

typedef struct progress {
    const char *task;    /* "rebuild"; borrowed */
    const char *subject; /* "account"; borrowed */
    const char *phase;   /* "reading", "swapping", ...; borrowed, a string literal */
    progress_part *parts;
    size_t nparts;
    long long started_us; /* monotonic time the reading began; 0 before */
    long long ended_us;   /* monotonic time the reading ended; 0 while it goes on */
} progress;

/* Creates an empty progress with n partitions (zeroed). Caller frees with progress_free(). */
progress *progress_new(const char *task, const char *subject, size_t nparts);
/* Frees p; NULL is a no-op. */
void progress_free(progress *p);

/* The reader of partition reached its end, which is at or past p's end: the position is the end. */
void progress_end_reached(progress *p, int partition);
/* True when every partition is read to its end. */
bool progress_complete(const progress *p);

/* Events read so far, over every partition (position - start, at most end - start). */
long long progress_done(const progress *p);
/* Events to read, over every partition (end - start). */
long long progress_total(const progress *p);
/* Events per second since the reading began, as of now_us (or its end); 0 before it began. */
double progress_rate(const progress *p, long long now_us);
/* Seconds left at the current rate; 0 when done, -1 while unknown (nothing read yet). */
long long progress_eta_s(const progress *p, long long now_us);

/* "1h02m03s", "2m03s", "5s" for seconds; "?" for a negative value. Writes into buf. */
const char *progress_duration(long long s, char *buf, size_t len);

/*
 * One line for a terminal, without newline: "<task> <subject>: <phase>  <done>/<total> events
 * (<percent>%)  <rate> events/s  ETA <eta>". Caller frees.
 */
char *progress_text(const progress *p, long long now_us);
/*
 * The same figures as a JSON object: {"type": "progress", "task", "subject", "phase",
 * "reading_s" (seconds spent reading), "events_done", "events_total", "percent", "events_per_s",
 * "eta_s" (null while unknown), "partitions": [{"partition", "start", "position", "end"}]}. Caller
 * decrefs.
 */
json_t *progress_json(const progress *p, long long now_us);

/*
 * Writes the progress to f: on a terminal (tty) the line replaces the previous one (final adds
 * the newline that ends it); otherwise one compact JSON object and a newline. Flushes f.
 */
void progress_emit(const progress *p, FILE *f, bool tty, bool final, long long now_us);

#endif
