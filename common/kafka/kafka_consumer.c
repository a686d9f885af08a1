/* kafka_consumer.c: librdkafka group consumers and readers driven by a libevent base. */
#include "kafka/kafka.h"
#include "kafka/kafka_int.h"

#include "core/log.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

struct kafka_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    wakeup w;
    char *topic;
    kafka_wake_cb wake;
    kafka_assign_cb on_assign;
    kafka_eof_cb on_eof;
    void *arg;
    rd_kafka_topic_partition_list_t *stopped; /* assigned, waiting for kafka_consumer_start() */
    rd_kafka_message_t **held;                /* messages of the last poll, destroyed on the next */
    size_t nheld;
    size_t held_cap;
    struct event *keepalive; /* a group member's wake-up while nothing arrives */
    bool closing;            /* in rd_kafka_consumer_close(): the owner is not told */
};

_Static_assert(KAFKA_OFFSET_BEGINNING == RD_KAFKA_OFFSET_BEGINNING, "offset constant");

size_t kafka_partitions_remove(int *v, size_t n, const int *revoked, size_t nrevoked)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool gone = false;
        for (size_t j = 0; j < nrevoked && !gone; j++)
            gone = v[i] == revoked[j];
        if (!gone)
            v[k++] = v[i];
    }
    return k;
}

static bool notify_assign(kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts,
                          bool assigned)
{
    if (!c->on_assign)
        return false;
    int *ids = xcalloc((size_t)parts->cnt + 1, sizeof(int));
    size_t n = 0;
    for (int i = 0; i < parts->cnt; i++) {
        if (strcmp(parts->elems[i].topic, c->topic) == 0)
            ids[n++] = parts->elems[i].partition;
    }
    bool defer = c->on_assign(ids, n, assigned, c->arg);
    free(ids);
    return defer;
}

static void change_assignment(kafka_consumer *c, rd_kafka_topic_partition_list_t *parts,
                              bool assign)
{
    rd_kafka_error_t *e = NULL;
    if (strcmp(rd_kafka_rebalance_protocol(c->rk), "COOPERATIVE") == 0)
        e = assign ? rd_kafka_incremental_assign(c->rk, parts)
                   : rd_kafka_incremental_unassign(c->rk, parts);
    else if (rd_kafka_assign(c->rk, assign ? parts : NULL) != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_error("rd_kafka_assign failed");
    if (e) {
        log_error("incremental assign failed: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

/*
 * Revoked partitions that were never started are only forgotten; the others are unassigned
 * (the eager protocol unassigns everything).
 */
static void revoke_partitions(kafka_consumer *c, rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *started = rd_kafka_topic_partition_list_copy(parts);
    for (int i = 0; c->stopped && i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (rd_kafka_topic_partition_list_del(c->stopped, tp->topic, tp->partition))
            rd_kafka_topic_partition_list_del(started, tp->topic, tp->partition);
    }
    change_assignment(c, started, false);
    rd_kafka_topic_partition_list_destroy(started);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)rk;
    kafka_consumer *c = opaque;
    bool assigned = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    log_kv(LOG_INFO, assigned ? "partitions assigned" : "partitions revoked",
           LOG_FIELDS("topic", c->topic));
    if (!assigned) {
        if (!c->closing)
            notify_assign(c, parts, false);
        revoke_partitions(c, parts);
        return;
    }
    if (c->closing) { /* served by the close: the owner is going, nothing to start */
        change_assignment(c, parts, true);
        return;
    }
    if (!notify_assign(c, parts, true)) {
        change_assignment(c, parts, true);
        return;
    }
    if (!c->stopped)
        c->stopped = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        rd_kafka_topic_partition_list_add(c->stopped, parts->elems[i].topic,
                                          parts->elems[i].partition);
}

int kafka_consumer_start(kafka_consumer *c, const int *partitions, const long long *offsets,
                         size_t n)
{
    if (!c->stopped)
        return -1;
    for (int i = 0; i < c->stopped->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &c->stopped->elems[i];
        size_t k = 0;
        while (k < n && partitions[k] != tp->partition)
            k++;
        if (k == n || strcmp(tp->topic, c->topic) != 0)
            return -1;
        tp->offset = offsets[k];
    }
    change_assignment(c, c->stopped, true);
    rd_kafka_topic_partition_list_destroy(c->stopped);
    c->stopped = NULL;
    return 0;
}

static void on_consumer_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    kafka_consumer *c = arg;
    kafka_wakeup_drain(&c->w);
    if (c->wake)
        c->wake(c->arg);
}

/*
 * A group member that does not poll within max.poll.interval.ms is taken for stuck and leaves
 * the group, and nothing arrives on an idle topic to make the owner poll: the wake-up wakes it
 * each second as well. Owners poll only when ready for a batch, so one that is busy is not
 * woken into doing so.
 */
static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    kafka_consumer *c = arg;
    c->wake(c->arg);
}

/* A group member subscribed to topic when subscribe is true, else a reader (no subscription). */
static kafka_consumer *consumer_new(struct event_base *base, const config_props *props,
                                    const char *group_id, const char *topic, bool subscribe,
                                    kafka_wake_cb wake, kafka_assign_cb on_assign, void *arg,
                                    char *err, size_t errlen)
{
    /* A subscribed topic that did not exist yet is found at the next metadata refresh: every
       10 s rather than librdkafka's 5 minutes, for a topic created after the services start.
       Messages fetched ahead of the application: at most 20,000 (and the fetch in flight), not
       librdkafka's 100,000, which holds a whole backlog in memory (ADR 0033). */
    const char *const defaults[] = {"topic.metadata.refresh.interval.ms",
                                    "10000",
                                    "queued.min.messages",
                                    KAFKA_PREFETCH_MESSAGES,
                                    "enable.auto.commit",
                                    "false",
                                    "enable.auto.offset.store",
                                    "false",
                                    "auto.offset.reset",
                                    "earliest",
                                    "client.id",
                                    "cqrs",
                                    "group.id",
                                    group_id,
                                    NULL};
    kafka_consumer *c = xcalloc(1, sizeof(*c));
    c->w.fds[0] = c->w.fds[1] = -1;
    c->topic = xstrdup(topic);
    c->wake = wake;
    c->on_assign = on_assign;
    c->arg = arg;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (kafka_apply_props(conf, defaults, props, err, errlen)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    char errstr[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka: %s", errstr);
        goto fail;
    }
    /* Serve logs, errors and rebalances from the consumer queue we poll. */
    rd_kafka_poll_set_consumer(c->rk);
    c->q = rd_kafka_queue_get_consumer(c->rk);
    if (kafka_wakeup_init(&c->w, base, c->q, on_consumer_wake, c, err, errlen))
        goto fail;
    if (!subscribe)
        return c;
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        snprintf(err, errlen, "kafka: subscribe %s: %s", topic, rd_kafka_err2str(e));
        goto fail;
    }
    if (wake) {
        struct timeval second = {1, 0};
        c->keepalive = event_new(base, -1, EV_PERSIST, on_keepalive, c);
        event_add(c->keepalive, &second);
    }
    return c;
fail:
    if (c->q)
        rd_kafka_queue_destroy(c->q);
    if (c->rk)
        rd_kafka_destroy(c->rk);
    kafka_wakeup_free(&c->w);
    free(c->topic);
    free(c);
    return NULL;
}

kafka_consumer *kafka_consumer_new(struct event_base *base, const config_props *props,
                                   const char *group_id, const char *topic, kafka_wake_cb wake,
                                   kafka_assign_cb on_assign, void *arg, char *err, size_t errlen)
{
    return consumer_new(base, props, group_id, topic, true, wake, on_assign, arg, err, errlen);
}

kafka_consumer *kafka_consumer_new_reader(struct event_base *base, const config_props *props,
                                          const char *topic, kafka_wake_cb wake, void *arg,
                                          char *err, size_t errlen)
{
    /* librdkafka gives a consumer its queue only with a group.id; assign() alone never joins. */
    return consumer_new(base, props, "cqrs-reader", topic, false, wake, NULL, arg, err, errlen);
}

void kafka_consumer_set_eof_cb(kafka_consumer *c, kafka_eof_cb cb)
{
    c->on_eof = cb;
}

size_t kafka_consumer_queued(kafka_consumer *c)
{
    return rd_kafka_queue_length(c->q);
}

void kafka_consumer_release(kafka_consumer *c)
{
    for (size_t i = 0; i < c->nheld; i++)
        rd_kafka_message_destroy(c->held[i]);
    c->nheld = 0;
}

/* Moves the messages among the got events of c->held to its front and fills out; returns how
   many. Events are logged or reported and destroyed. */
static size_t keep_messages(kafka_consumer *c, kafka_message *out, size_t got)
{
    size_t n = 0;
    for (size_t i = 0; i < got; i++) {
        rd_kafka_message_t *m = c->held[i];
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_kv(LOG_WARN, "consumer error",
                       LOG_FIELDS("topic", c->topic, "error", rd_kafka_message_errstr(m)));
            else if (c->on_eof)
                c->on_eof(m->partition, c->arg);
            rd_kafka_message_destroy(m);
            continue;
        }
        c->held[n] = m;
        kafka_message *o = &out[n++];
        o->topic = rd_kafka_topic_name(m->rkt);
        o->partition = m->partition;
        o->offset = m->offset;
        o->key = m->key;
        o->key_len = m->key_len;
        o->value = m->payload;
        o->len = m->len;
        o->timestamp_ms = (long long)rd_kafka_message_timestamp(m, NULL);
        o->nheaders = 0;
        rd_kafka_headers_t *hdrs = NULL;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const char *name;
            const void *val;
            size_t size;
            for (size_t k = 0; o->nheaders < KAFKA_MAX_HEADERS &&
                               !rd_kafka_header_get_all(hdrs, k, &name, &val, &size);
                 k++) {
                o->headers[o->nheaders].name = name;
                o->headers[o->nheaders].value = val;
                o->headers[o->nheaders].len = val ? size : 0;
                o->nheaders++;
            }
        }
    }
    c->nheld = n;
    return n;
}

size_t kafka_consumer_poll(kafka_consumer *c, kafka_message *out, size_t max)
{
    kafka_consumer_release(c);
    if (max > c->held_cap) { /* grows once to the caller's batch size */
        c->held = xrealloc(c->held, max * sizeof(*c->held));
        c->held_cap = max;
    }
    /* A batch of events only (errors, ends of partitions) yields no message but does not mean
       the queue is empty: keep going, since the wake-up fires only on empty -> non-empty. */
    size_t n = 0;
    ssize_t got;
    while (n == 0 && (got = rd_kafka_consume_batch_queue(c->q, 0, c->held, max)) > 0)
        n = keep_messages(c, out, (size_t)got);
    return n;
}

char *kafka_consumer_cluster_id(kafka_consumer *c)
{
    return kafka_cluster_id(c->rk);
}

long long kafka_consumer_high_watermark(kafka_consumer *c, int partition)
{
    int64_t low = -1, high = -1;
    if (rd_kafka_get_watermark_offsets(c->rk, c->topic, partition, &low, &high) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        high < 0)
        return -1;
    return (long long)high;
}

void kafka_consumer_commit(kafka_consumer *c, const int *partitions, const long long *next_offsets,
                           size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        if (next_offsets[i] >= 0)
            rd_kafka_topic_partition_list_add(l, c->topic, partitions[i])->offset = next_offsets[i];
    rd_kafka_resp_err_t e = l->cnt > 0 ? rd_kafka_commit(c->rk, l, 1) : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e)
        log_kv(LOG_WARN, "offset commit failed", LOG_FIELDS("error", rd_kafka_err2str(e)));
    rd_kafka_topic_partition_list_destroy(l);
}

int kafka_consumer_assign(kafka_consumer *c, const int *partitions, const long long *offsets,
                          size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, c->topic, partitions[i])->offset = offsets[i];
    rd_kafka_resp_err_t e = rd_kafka_assign(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        log_kv(LOG_ERROR, "assign failed",
               LOG_FIELDS("topic", c->topic, "error", rd_kafka_err2str(e)));
    return e ? -1 : 0;
}

int kafka_consumer_partition_count(kafka_consumer *c, int timeout_ms)
{
    return kafka_rk_partition_count(c->rk, c->topic, timeout_ms);
}

int kafka_consumer_query_watermarks(kafka_consumer *c, int partition, long long *low,
                                    long long *high, int timeout_ms, char *err, size_t errlen)
{
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(c->rk, c->topic, partition, &lo, &hi, timeout_ms);
    if (e) {
        snprintf(err, errlen, "watermarks of %s [%d]: %s", c->topic, partition,
                 rd_kafka_err2str(e));
        return -1;
    }
    *low = (long long)lo;
    *high = (long long)hi;
    return 0;
}

/*
 * The timestamp of the message at offset of partition, read by assigning the reader there for a
 * moment; -1 when it could not be read within timeout_ms or has none.
 */
static long long message_time(kafka_consumer *c, int partition, long long offset, int timeout_ms)
{
    if (kafka_consumer_assign(c, &partition, &offset, 1) != 0)
        return -1;
    long long ts = -1;
    long long deadline = timeout_ms;
    while (deadline > 0) {
        rd_kafka_message_t *m = rd_kafka_consume_queue(c->q, 100);
        deadline -= 100;
        if (!m)
            continue;
        bool ours = !m->err && m->partition == partition && m->offset >= offset;
        if (ours) {
            rd_kafka_timestamp_type_t type;
            ts = (long long)rd_kafka_message_timestamp(m, &type);
        }
        rd_kafka_message_destroy(m);
        if (ours)
            break;
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(c->rk, NULL);
    if (e)
        log_kv(LOG_WARN, "unassign failed", LOG_FIELDS("error", rd_kafka_err2str(e)));
    /* What was fetched meanwhile (an end of partition, say) must not reach the reader's user;
       anything later is of the old assignment, which librdkafka drops by its version. */
    for (rd_kafka_message_t *m; (m = rd_kafka_consume_queue(c->q, 0));)
        rd_kafka_message_destroy(m);
    return ts;
}

int kafka_consumer_offsets_for_time(kafka_consumer *c, const int *partitions, size_t n,
                                    long long time_ms, long long *offsets, int timeout_ms,
                                    char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, c->topic, partitions[i])->offset = time_ms;
    int rc = -1;
    rd_kafka_resp_err_t e = n ? rd_kafka_offsets_for_times(c->rk, l, timeout_ms) : 0;
    if (e) {
        snprintf(err, errlen, "offsets for time in %s: %s", c->topic, rd_kafka_err2str(e));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, c->topic, partitions[i]);
        if (!tp || tp->err) {
            snprintf(err, errlen, "offsets for time in %s [%d]: %s", c->topic, partitions[i],
                     tp ? rd_kafka_err2str(tp->err) : "no answer");
            goto out;
        }
        if (tp->offset >= 0) {
            offsets[i] = tp->offset;
            continue;
        }
        /* "None at or after the time": believe it only when the last message is older. */
        long long low, high;
        if (kafka_consumer_query_watermarks(c, partitions[i], &low, &high, timeout_ms, err,
                                            errlen) != 0)
            goto out;
        long long last = high > low ? message_time(c, partitions[i], high - 1, timeout_ms) : -1;
        if (high <= low || (last >= 0 && last < time_ms)) {
            offsets[i] = high;
            continue;
        }
        LOG_KV(LOG_WARN,
               "the broker found no offset for the time, but the partition has newer "
               "messages: reading it from the beginning",
               LOG_STR("topic", c->topic), LOG_NUM("partition", partitions[i]));
        offsets[i] = KAFKA_OFFSET_BEGINNING;
    }
    rc = 0;
out:
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

void kafka_consumer_free(kafka_consumer *c)
{
    if (!c)
        return;
    kafka_consumer_release(c);
    if (c->keepalive)
        event_free(c->keepalive);
    c->closing = true;
    rd_kafka_consumer_close(c->rk);
    if (c->stopped)
        rd_kafka_topic_partition_list_destroy(c->stopped);
    rd_kafka_queue_destroy(c->q);
    rd_kafka_destroy(c->rk);
    kafka_wakeup_free(&c->w);
    free(c->held);
    free(c->topic);
    free(c);
}
