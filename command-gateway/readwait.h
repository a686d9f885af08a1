/* readwait.h: reads waiting until a projection row reaches a version (LISTEN/NOTIFY). */
#ifndef CQRS_READWAIT_H
#define CQRS_READWAIT_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

/*
 * The projector NOTIFYs channel READWAIT_CHANNEL with {"tenant", "aggregate_type",
 * "aggregate_id", "version"} for each row it changes, in the transaction that changes it. A
 * readwait holds one connection that LISTENs there and wakes the reads waiting for that row:
 * read-your-writes without polling. One per worker (event loop); not thread-safe.
 */
#define READWAIT_CHANNEL "cqrs_projection"

typedef struct readwait readwait;
typedef struct readwait_entry readwait_entry;

typedef enum {
    READWAIT_REACHED, /* a notification named the row at min_version or later */
    READWAIT_RECHECK, /* the listening connection came (back) up: notifications may be lost */
    READWAIT_TIMEOUT, /* the deadline passed; the entry is gone after this call */
} readwait_event;

/* Called on the entry's events; arg as given to readwait_add(). */
typedef void (*readwait_cb)(readwait_event ev, void *arg);

/* Connects (asynchronously) to conninfo on base and LISTENs. NULL with err on a bad conninfo. */
readwait *readwait_new(struct event_base *base, const char *conninfo, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees w. Entries still waiting are dropped without a call: cancel them first. */
void readwait_free(readwait *w);

/* True while the LISTEN is in force. */
bool readwait_listening(const readwait *w);

/*
 * Waits for the row (tenant, type, id) to reach min_version, at most timeout_ms. cb runs for
 * each event until readwait_cancel() or READWAIT_TIMEOUT. The strings are copied. Register
 * before the first read of the row: a change committed after that read is then never missed.
 */
readwait_entry *readwait_add(readwait *w, const char *tenant, const char *type, const char *id,
                             long long min_version, long long timeout_ms, readwait_cb cb,
                             void *arg);

/* Stops waiting and frees e; no call follows. Allowed from e's own callback (not after TIMEOUT). */
void readwait_cancel(readwait_entry *e);

#endif
