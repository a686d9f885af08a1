/* kafka_int.h: what kafka.c and kafka_consumer.c share; not part of the library's interface. */
#ifndef CQRS_KAFKA_INT_H
#define CQRS_KAFKA_INT_H

#include "core/config.h"
#include "kafka/kafka.h"

#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* The wake-up pipe: librdkafka writes one byte when a queue goes from empty to non-empty. */
typedef struct wakeup {
    int fds[2];
    struct event *ev;
} wakeup;

/* Applies the defaults (NULL-terminated key, value pairs), then props over them; routes
   librdkafka's log to ours. -1 with err naming the key on a bad one. */
int kafka_apply_props(rd_kafka_conf_t *conf, const char *const *defaults, const config_props *props,
                      char *err, size_t errlen);
/*
 * Opens the pipe, watches its read end on base with fn and has librdkafka write to it for q.
 * fn also runs once from the loop whatever the pipe says: librdkafka writes only when q goes
 * from empty to non-empty, so an op queued before this call (a broker refusing the connection
 * while rd_kafka_new() was still returning) would otherwise never be served, and no later op
 * would wake the loop either. -1 with err on failure.
 */
int kafka_wakeup_init(wakeup *w, struct event_base *base, rd_kafka_queue_t *q, event_callback_fn fn,
                      void *arg, char *err, size_t errlen);
/* Empties the pipe, so the next write wakes the loop again. */
void kafka_wakeup_drain(const wakeup *w);
/* The cluster id from rk's metadata cache (never waits), copied; NULL while unknown. */
char *kafka_cluster_id(rd_kafka_t *rk);
/* Closes the pipe and frees its event; safe on a wakeup never opened (fds -1). */
void kafka_wakeup_free(wakeup *w);
/* The producer's handle. */
rd_kafka_t *kafka_producer_rk(kafka_producer *p);
typedef enum kafka_topics_state {
    KAFKA_TOPICS_ASKING,  /* not all created yet: worth asking again */
    KAFKA_TOPICS_DONE,    /* every topic exists */
    KAFKA_TOPICS_REFUSED, /* not authorized to create topics: asking again will not help */
} kafka_topics_state;
/* What a CreateTopics answer for one topic means. */
kafka_topics_state kafka_topics_verdict(rd_kafka_resp_err_t err);
/*
 * Sends one CreateTopics request for the topics, its result to q, bounded by timeout_ms. 0, or -1
 * with err when the request could not be made.
 */
int kafka_create_topics_send(rd_kafka_t *rk, const char *const *topics, size_t n, int partitions,
                             int replication, int timeout_ms, rd_kafka_queue_t *q, char *err,
                             size_t errlen);
/* What the answer ev (a CreateTopics result or an error) says; why names the first failure. */
kafka_topics_state kafka_create_topics_read(rd_kafka_event_t *ev, char *why, size_t whylen);
/* The partition count of topic from the cluster's metadata; -1 when unknown in timeout_ms. */
int kafka_rk_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms);

#endif
