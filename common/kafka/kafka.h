/*
 * kafka.h: librdkafka behind two opaque handles that run on a libevent base. Queues wake the
 * loop through rd_kafka_queue_io_event_enable(): nothing here blocks the loop or polls on a timer.
 */
#ifndef CQRS_KAFKA_H
#define CQRS_KAFKA_H

#include "core/config.h"
#include "core/header.h"

#include <stdbool.h>
#include <stddef.h>

struct event_base;

#define KAFKA_MAX_HEADERS 24

typedef struct kafka_producer kafka_producer;
typedef struct kafka_consumer kafka_consumer;

/* The outcome of one produced message, as its delivery report gives it. */
typedef struct kafka_delivery {
    int err;              /* 0: durable (acks=all); else librdkafka's error code */
    const char *errstr;   /* the error's text, "" on success */
    bool maybe_persisted; /* on failure: the broker may have written it all the same */
    bool too_large;       /* on failure: larger than the broker or the topic takes */
    int partition;
    long long offset;
} kafka_delivery;

/* Delivery report, on the loop thread; opaque is the pointer given to kafka_produce(). */
typedef void (*kafka_delivery_cb)(void *opaque, const kafka_delivery *d, void *arg);

typedef enum { KAFKA_OK = 0, KAFKA_QUEUE_FULL, KAFKA_ERROR } kafka_send_result;

/* A consumed message; every pointer is borrowed until the next poll or release. */
typedef struct kafka_message {
    const char *topic;
    int partition;
    long long offset;
    const char *key;
    size_t key_len;
    const char *value;
    size_t len;
    header headers[KAFKA_MAX_HEADERS];
    size_t nheaders;
    long long timestamp_ms; /* the message's timestamp (ms since the epoch); -1 when it has none */
} kafka_message;

/* Messages may be waiting: call kafka_consumer_poll() (now or when the caller is ready).
   May be NULL for a consumer that is polled on its own schedule. */
typedef void (*kafka_wake_cb)(void *arg);
/*
 * Partitions of the subscribed topic were assigned (true) or revoked (false). Called from
 * kafka_consumer_poll(). For an assignment, return true to choose where the partitions start:
 * they stay stopped until kafka_consumer_start() (which may come later, from another callback,
 * as long as kafka_consumer_poll() is not called in between). Return false to start them from
 * the group's committed offsets. The return value of a revocation is ignored.
 */
typedef bool (*kafka_assign_cb)(const int *partitions, size_t n, bool assigned, void *arg);

/* Removes the revoked partitions from the set v of n; returns the new count. */
size_t kafka_partitions_remove(int *v, size_t n, const int *revoked, size_t nrevoked);

/* Start offset for kafka_consumer_start(): the first message the partition still holds. */
#define KAFKA_OFFSET_BEGINNING (-2LL)

/*
 * Creates an idempotent producer (acks=all) with props applied on top of our defaults; props keys
 * are librdkafka's. cb receives every delivery report. Returns NULL with err on a bad property.
 */
kafka_producer *kafka_producer_new(struct event_base *base, const config_props *props,
                                   kafka_delivery_cb cb, void *arg, char *err, size_t errlen);
/*
 * Enqueues one message (copied). partition -1 partitions by key. Returns KAFKA_QUEUE_FULL when
 * the local queue is at its bound (back-pressure), KAFKA_ERROR otherwise; the delivery callback
 * fires only for KAFKA_OK.
 */
kafka_send_result kafka_produce(kafka_producer *p, const char *topic, int partition,
                                const char *key, size_t key_len, const void *value, size_t len,
                                const header *h, size_t nh, void *opaque)
    __attribute__((warn_unused_result));
/* librdkafka's default message.max.bytes: below the brokers' default (1048588). */
#define KAFKA_DEFAULT_MAX_MESSAGE 1000000
/*
 * The size librdkafka checks against message.max.bytes for a message of key_len, len and
 * headers h (kafka_produce() refuses a larger one): key, value, the headers serialized, and the
 * record's framing at its largest.
 */
size_t kafka_message_size(size_t key_len, size_t len, const header *h, size_t nh);
/* Messages waiting for a delivery report. */
int kafka_producer_outq_len(const kafka_producer *p);
/*
 * False after librdkafka reported all brokers down, until a delivery succeeds or a broker
 * answers the metadata request a probe thread sends meanwhile (so that readiness comes back
 * without traffic). Thread-safe.
 */
bool kafka_producer_healthy(kafka_producer *p);
/* ids_monotonic_us() when the outage that makes the producer unhealthy began; 0 while healthy. */
long long kafka_producer_down_since_us(kafka_producer *p);
/* The id of the producer's Kafka cluster, as kafka_consumer_cluster_id() gives it. */
char *kafka_producer_cluster_id(kafka_producer *p);
/* Number of partitions of topic, from cluster metadata; -1 on error. Blocking: start-up only. */
int kafka_partition_count(kafka_producer *p, const char *topic, int timeout_ms);
/*
 * Creates the topics that do not exist yet, with the given partitions and replication factor
 * (existing topics are left as they are). Returns 0, or -1 with err naming the topic or the
 * failure. Blocking for at most timeout_ms: start-up only.
 */
int kafka_ensure_topics(kafka_producer *p, const char *const *topics, size_t n, int partitions,
                        int replication, int timeout_ms, char *err, size_t errlen);
/*
 * Creates the topics in the background, for a service whose kafka_ensure_topics() failed at start
 * (Kafka not up yet, say): asks at once, then again after 1 s, doubling up to 30 s, until Kafka
 * answers that each exists (created now or before), or that this client may not create topics
 * (logged as an error: an operator creates them, and the service's consumers find them at their
 * next metadata refresh). Never blocks the loop. p must outlive it. NULL (logged) when the
 * wake-up pipe cannot be made.
 */
typedef struct kafka_topics_keeper kafka_topics_keeper;
kafka_topics_keeper *kafka_topics_keeper_new(struct event_base *base, kafka_producer *p,
                                             const char *const *topics, size_t n, int partitions,
                                             int replication);
void kafka_topics_keeper_free(kafka_topics_keeper *k);
/* Waits up to timeout_ms for outstanding deliveries. Blocking: shutdown only. */
int kafka_producer_flush(kafka_producer *p, int timeout_ms);
/* Drops the messages not delivered yet; their delivery callbacks run, with an error, before it
   returns. For shutdown after a flush that timed out: librdkafka would drop them silently. */
void kafka_producer_purge(kafka_producer *p);
/* Destroys the producer (flush first to keep undelivered messages). */
void kafka_producer_free(kafka_producer *p);

/*
 * How many messages a consumer fetches ahead of what the application has taken, by default
 * (librdkafka's queued.min.messages, counted over all the consumer's partitions; ADR 0033).
 */
#define KAFKA_PREFETCH_MESSAGES "20000"

/*
 * Creates a group consumer subscribed to one topic. props are applied on top of our defaults
 * (no auto commit, no auto offset store, KAFKA_PREFETCH_MESSAGES). wake is called on the loop
 * thread when the queue goes from empty to non-empty; on_assign (may be NULL) on every rebalance.
 */
kafka_consumer *kafka_consumer_new(struct event_base *base, const config_props *props,
                                   const char *group_id, const char *topic, kafka_wake_cb wake,
                                   kafka_assign_cb on_assign, void *arg, char *err, size_t errlen);
/*
 * Releases the previous batch and fetches up to max waiting messages without blocking; serves
 * rebalances on the way. Returns the number filled in out. Call again until it returns 0: the
 * wake callback only fires when the queue was empty.
 */
size_t kafka_consumer_poll(kafka_consumer *c, kafka_message *out, size_t max);
/*
 * Starts the partitions of the last assignment whose on_assign returned true, each at its offset
 * (or KAFKA_OFFSET_BEGINNING). partitions must be that assignment's. Returns 0, or -1 when the
 * partitions were revoked in the meantime or librdkafka refused.
 */
int kafka_consumer_start(kafka_consumer *c, const int *partitions, const long long *offsets,
                         size_t n);
/*
 * Called from kafka_consumer_poll() when the consumer has reached the end of a partition, i.e.
 * knows its position there; needs the property enable.partition.eof=true.
 */
typedef void (*kafka_eof_cb)(int partition, void *arg);
/* Sets the end-of-partition callback (arg is the consumer's). */
void kafka_consumer_set_eof_cb(kafka_consumer *c, kafka_eof_cb cb);
/* Releases the messages of the last poll (their pointers become invalid). */
void kafka_consumer_release(kafka_consumer *c);
/*
 * The partition's high watermark (the offset its next message will get) as the consumer last
 * learnt it from a fetch, without asking the broker; -1 when not known yet.
 */
long long kafka_consumer_high_watermark(kafka_consumer *c, int partition);
/*
 * The id of the Kafka cluster the consumer talks to, as its last metadata gave it, or NULL while
 * no metadata has arrived (or the broker is too old to name its cluster). Never blocks. The
 * caller frees the string.
 */
char *kafka_consumer_cluster_id(kafka_consumer *c);
/* Messages fetched and not yet taken by kafka_consumer_poll(): at most about
   KAFKA_PREFETCH_MESSAGES (or kafka.queued.min.messages) and one fetch more. */
size_t kafka_consumer_queued(kafka_consumer *c);
/* Commits the next offsets of n partitions to Kafka in one request, asynchronously
   (informational: lag tooling); a partition whose offset is negative is left out. */
void kafka_consumer_commit(kafka_consumer *c, const int *partitions, const long long *next_offsets,
                           size_t n);
/* Leaves the group and destroys the consumer. Blocking: shutdown only. */
void kafka_consumer_free(kafka_consumer *c);

/*
 * Operator tools read a topic outside any consumer group: a reader is a kafka_consumer that joins
 * no group, commits nothing and reads only the partitions kafka_consumer_assign() names. The
 * group.id librdkafka requires defaults to "cqrs-reader" (kafka.group.id overrides it); it is
 * never joined. Poll, release and free it like any consumer; wake may be NULL.
 */
kafka_consumer *kafka_consumer_new_reader(struct event_base *base, const config_props *props,
                                          const char *topic, kafka_wake_cb wake, void *arg,
                                          char *err, size_t errlen);
/*
 * Makes a reader read partitions[i] from offsets[i] (or KAFKA_OFFSET_BEGINNING), replacing what
 * it read before. Returns 0, or -1 when librdkafka refused.
 */
int kafka_consumer_assign(kafka_consumer *c, const int *partitions, const long long *offsets,
                          size_t n) __attribute__((warn_unused_result));
/* Number of partitions of the consumer's topic, from cluster metadata; -1 on error. Blocking. */
int kafka_consumer_partition_count(kafka_consumer *c, int timeout_ms);
/*
 * Asks the partition's leader for its low watermark (first offset it holds) and high watermark
 * (the offset of its next message). Returns 0, or -1 with err. Blocking for at most timeout_ms.
 */
int kafka_consumer_query_watermarks(kafka_consumer *c, int partition, long long *low,
                                    long long *high, int timeout_ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/*
 * Fills offsets[i] with the first offset of partitions[i] whose message timestamp is at or after
 * time_ms (milliseconds since the epoch), through the brokers' offsets-for-times lookup; with the
 * high watermark when every message is older. A broker that answers "none" for a partition whose
 * last message is not older (librdkafka's mock cluster cannot look up by time) gets the
 * partition read from the beginning: too much is read, never too little. Only for a reader, before
 * kafka_consumer_assign(). Returns 0, or -1 with err. Blocking for a few times timeout_ms at most.
 */
int kafka_consumer_offsets_for_time(kafka_consumer *c, const int *partitions, size_t n,
                                    long long time_ms, long long *offsets, int timeout_ms,
                                    char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
