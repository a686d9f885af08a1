/*
 * opsrun.h: the run of an operator subcommand (replay, redrive): one event base, one PostgreSQL
 * connection and one producer, used in blocking steps. There is no long-running loop: each call
 * runs the loop until its own answer is in, or the run's timeout has passed.
 */
#ifndef CQRS_OPSRUN_H
#define CQRS_OPSRUN_H

#include "core/config.h"
#include "domain/envelope.h"
#include "kafka/kafka.h"
#include "pg/pgconn.h"

#include <stdbool.h>
#include <stddef.h>

struct event_base;

typedef struct opsrun opsrun;

/* Called for each message Kafka confirmed, with the partition and offset it got. */
typedef void (*opsrun_delivered_cb)(int partition, long long offset, void *arg);

/*
 * Creates the run: an event base, a connection to conninfo (made on the first query) and an
 * idempotent producer with kafka's properties (copied). Every later wait gives up after
 * timeout_ms without an answer. delivered (may be NULL) observes the confirmed deliveries.
 * Returns NULL with err on a bad property. Caller frees with opsrun_free().
 */
opsrun *opsrun_new(const char *conninfo, const config_props *kafka, long long timeout_ms,
                   opsrun_delivered_cb delivered, void *arg, char *err, size_t errlen);
/*
 * Runs one statement (text parameters; NULL is SQL NULL) and waits for it. On success cb (may be
 * NULL) is called with the rows before this returns. Returns 0, or -1 with err: the server's
 * error, the connection lost, or no answer within the timeout (PostgreSQL unreachable: the
 * connection's warnings are logged).
 */
int opsrun_query(opsrun *r, const char *sql, int nparams, const char *const *params, pgconn_cb cb,
                 void *arg, char *err, size_t errlen) __attribute__((warn_unused_result));
/*
 * Enqueues one message (copied; partition -1 partitions by key), waiting while the producer's
 * queue is full. Returns 0, or -1 with err.
 */
int opsrun_produce(opsrun *r, const char *topic, int partition, const char *key, size_t key_len,
                   const void *value, size_t len, const header *h, size_t nh, char *err,
                   size_t errlen) __attribute__((warn_unused_result));
/*
 * Waits until Kafka has confirmed or refused everything produced. Returns 0, or -1 with err
 * naming the first refusal (or the timeout).
 */
int opsrun_flush(opsrun *r, char *err, size_t errlen) __attribute__((warn_unused_result));
/*
 * Creates the run's reader of topic (see kafka_consumer_new_reader()) with kafka's properties, and
 * ends of partitions reported. The run owns it; at most one per run. NULL with err.
 */
kafka_consumer *opsrun_reader(opsrun *r, const config_props *kafka, const char *topic, char *err,
                              size_t errlen);

/* A range of one partition to read, [from, to); done once read to its end. */
typedef struct opsrun_range {
    int partition;
    long long from, to;
    bool done;
} opsrun_range;

/*
 * Receives the n messages of one poll that fall in a range not read yet, in the partitions'
 * order; they are borrowed until it returns. Returns 0, or -1 with err to stop the reading.
 */
typedef int (*opsrun_batch_cb)(const kafka_message *const *msgs, size_t n, void *arg, char *err,
                               size_t errlen);

/*
 * Reads the ranges (n of them; those done already are skipped) with the run's reader, passing
 * each batch to cb, until every range is done: its last message was read, or the partition's end
 * (which is past the range). Messages beyond a range (newer ones, copies made meanwhile) are not
 * passed. Returns 0, or -1 with err (cb's, or no message within the timeout).
 */
int opsrun_read(opsrun *r, opsrun_range *ranges, size_t n, opsrun_batch_cb cb, void *arg, char *err,
                size_t errlen) __attribute__((warn_unused_result));

/* Runs the loop until something happens on it (a reader wakes up, a delivery) or ms pass. */
void opsrun_wait(opsrun *r, int ms);
/* Frees the reader, the connection, the producer (unconfirmed messages are dropped) and the base.
   NULL is a no-op. */
void opsrun_free(opsrun *r);

#endif
