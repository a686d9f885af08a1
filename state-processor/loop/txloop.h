/*
 * txloop.h: the consume-and-commit loop that the processor and the projector share.
 *
 * A txloop owns a consumer group member and the steps around its owner's transactions:
 *   - partitions newly assigned start at the offsets stored in PostgreSQL, as far as offsetlog
 *     trusts them for the log being read (ADR 0007, ADR 0022);
 *   - each poll's messages are checked against that log, then handed to the owner as a batch;
 *   - the owner ends each step with txloop_done() or txloop_next(), or has it retried after a
 *     capped exponential backoff with txloop_backoff();
 *   - an owner whose step waits on PostgreSQL may take the next batch ahead
 *     (txloop_take_ahead()) to decode it meanwhile, and runs it once the step ends
 *     (txloop_continue()), the loop staying busy: its transaction begins after the one before
 *     ends, as ever;
 *   - a stop ends the loop between batches, never inside one: a batch mid-transaction ends with
 *     its COMMIT or its rollback first; one in backoff, or failing once the stop was asked for,
 *     is dropped uncommitted and consumed again by whoever owns its partition next;
 *   - a stored offset of another log under offsets.on_mismatch=fail stops the loop for an
 *     operator (txloop_failed()).
 * txphase counts the queries of one step and keeps its first failure, telling an error about the
 * data (retrying the same rows cannot succeed) from one about the server.
 */
#ifndef CQRS_TXLOOP_H
#define CQRS_TXLOOP_H

#include "core/config.h"
#include "kafka/kafka.h"
#include "core/metrics.h"
#include "loop/offsetlog.h"
#include "pg/pgconn.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct txloop txloop;

typedef struct txloop_config {
    const char *service;     /* "processor", "projector": its offset-reset counter and logs */
    const char *noun;        /* what the partitions hold, for the logs: "command", "events" */
    const char *group;       /* the consumer group, also the group_id of consumer_offsets */
    const char *topic;       /* the topic consumed */
    const char *on_mismatch; /* offsets.on_mismatch: "reset" (NULL too) or "fail" */
    long long batch_max;     /* messages polled at most per batch */
    long long retry_max_ms;  /* the backoff's cap */
} txloop_config;

typedef struct txloop_owner {
    /* A batch: copy what is needed from msgs (released after this returns), then end the step
       with txloop_done(), txloop_next() or txloop_backoff(). */
    void (*batch)(void *arg, const kafka_message *msgs, size_t n);
    /* Optional: partitions revoked. */
    void (*revoked)(void *arg, const int *partitions, size_t n);
    /* Optional: false while the owner still has work of a committed batch to finish; the loop
       then ends on the stop only once the owner calls txloop_quiet(). */
    bool (*quiet)(void *arg);
    /* Optional: false while the owner cannot take another batch yet (it still holds too much of
       the ones before); the loop then polls nothing until the owner calls txloop_resume(). */
    bool (*can_take)(void *arg);
    void *arg;
} txloop_owner;

/* A loop over cfg->topic (copied) on base, counting its offset resets in m; consuming only once
   started. NULL with err naming the bad key. */
txloop *txloop_new(struct event_base *base, const txloop_config *cfg, metrics *m,
                   const txloop_owner *owner, char *err, size_t errlen);
/* Joins the group: the stored offsets are read through pg, the owner's connection (steps never
   overlap). -1 with err when the consumer cannot be made. */
int txloop_start(txloop *l, pgconn *pg, const config_props *kafka_props, char *err, size_t errlen);
/* Leaves the group for good, first step of the owner's free: the consumer closes (revocations
   still reach the owner, whose connection is alive), and afterwards the answers that freeing
   the connection gives to queries still queued, the loop's and the owner's, start nothing. */
void txloop_leave(txloop *l);
/* After the owner's connection is freed (see txloop_leave()). */
void txloop_free(txloop *l);

kafka_consumer *txloop_consumer(txloop *l);
offsetlog *txloop_offsets(txloop *l);

/* The step succeeded: the next one runs from the loop (or the loop ends, when stopping). */
void txloop_done(txloop *l);
/* The step succeeded: the next batch is polled at once, unless stopping. */
void txloop_next(txloop *l);
/* The step failed (error says why): retry() runs after the backoff. */
void txloop_backoff(txloop *l, void (*retry)(void *arg), const char *what, const char *error);
bool txloop_backing_off(const txloop *l);

/* The owner can take batches again (see txloop_owner.can_take): polls from the loop. */
void txloop_resume(txloop *l);

/*
 * During a step, polls the next batch and hands it to owner.batch at once, the loop staying busy
 * (not while stopping, nor while assigned partitions wait for their stored offsets, nor when
 * owner.can_take refuses). The owner holds it, decoded, and begins its transaction only once the
 * step's transaction has ended. True when a batch was handed over. When no message was waiting,
 * the first to arrive before the step ends is taken ahead as the batch, from the consumer's
 * wake-up.
 */
bool txloop_take_ahead(txloop *l);
/*
 * The step succeeded and the owner holds a batch taken ahead: true when it runs it now as the
 * next step; false when the loop is stopping, and the owner drops that batch (nothing of it is
 * committed: whoever owns its partitions next consumes it again) and ends with txloop_next().
 */
bool txloop_continue(txloop *l);

/* Ends the loop between batches (see above). */
void txloop_stop(txloop *l);
/* The owner has become quiet: ends the loop if it was stopped meanwhile. */
void txloop_quiet(txloop *l);
bool txloop_stopping(const txloop *l);
/* Stopped for an operator: a stored offset of another log under offsets.on_mismatch=fail. */
bool txloop_failed(const txloop *l);

/* Stores $1, offset rows [{group_id, topic, partition, next_offset}], in consumer_offsets, as
   counting the log of cluster $2 (ADR 0022): part of the transaction of the batch they follow. */
extern const char txloop_offsets_sql[];

/* ---- the queries of one step ---- */

typedef struct txphase {
    size_t outstanding; /* queries queued and not yet answered */
    bool failed;
    const char *refusal; /* the data was refused: DLQ_REJECTED_BY_PG, DLQ_UNENCODABLE */
    bool unique;         /* that refusal was a unique violation (SQLSTATE 23505) */
    char error[512];     /* the first failure */
    unsigned session;    /* pgconn_connects() when the transaction began; 0: none up */
} txphase;

/*
 * A new transaction on pg: nothing outstanding, nothing failed, and its session is the one up
 * now. Every statement of it must go to that session: one queued once it is lost would wait for
 * the next session and run there outside the transaction (its BEGIN went with the old one), in
 * a transaction of its own that commits at once.
 */
void txphase_begin(txphase *ph, const pgconn *pg);
/* Queues a prepared query answered to cb(arg), counted; 0, or -1 (and failed) when refused,
   or when the transaction's session is no longer up (see txphase_begin()). */
int txphase_query(txphase *ph, pgconn *pg, const char *sql, int n, const char *const *v,
                  pgconn_cb cb, void *arg);
/* A query of the step failed (what: which one); the first reason is kept, and whether PostgreSQL
   refused the data itself (SQLSTATE class 22, 23 or 54), and for a unique violation. */
void txphase_error(txphase *ph, const pgconn_result *r, const char *what);
/* A parameter of the step could not be built: a row cannot be encoded as JSON. */
void txphase_unencodable(txphase *ph, const char *what);
/* Any other failure, with its reason (formatted). */
void txphase_fail(txphase *ph, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queues ROLLBACK in the transaction's session, answered to nobody; logs when it cannot. Once
   that session is gone, so is the transaction: nothing is queued (a ROLLBACK would wait for the
   next session, to find no transaction there). */
void txphase_rollback(const txphase *ph, pgconn *pg);

#endif
