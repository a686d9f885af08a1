/* kafka.c: what the producer and the consumers share, and the producer (kafka_consumer.c has the
   consumers), driven by a libevent base. */
#include "kafka/kafka.h"
#include "kafka/kafka_int.h"

#include "core/ids.h"
#include "core/log.h"
#include "core/xalloc.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Health is counted in outages: each "all brokers down" opens one, and the producer is healthy
 * again once a delivery or a probe (a metadata request a broker answered) closes the latest.
 * The probe is a thread of its own, started at the first outage, because rd_kafka_metadata()
 * blocks and librdkafka has no asynchronous metadata request; it sleeps on the condition while
 * the producer is healthy.
 */
typedef struct probe {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool closing;
    unsigned outages;        /* "all brokers down" reports so far */
    unsigned recovered;      /* the latest outage a delivery or a probe has seen end */
    long long down_since_us; /* ids_monotonic_us() when the open outage began */
} probe;

struct kafka_producer {
    rd_kafka_t *rk;
    wakeup w;
    kafka_delivery_cb cb;
    void *arg;
    probe pr;
};

/* How long one probe waits for a broker's answer, and between two that got none. */
#define PROBE_TIMEOUT_MS 2000
#define PROBE_PAUSE_MS   500

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: 0..3 error, 4 warning, 5..6 info, 7 debug */
    log_level l = level <= 3   ? LOG_ERROR
                  : level == 4 ? LOG_WARN
                  : level <= 6 ? LOG_INFO
                               : LOG_DEBUG;
    /* kafka.* properties go to every client of a service, its producer and its consumers alike:
       the one a property does not apply to ignores it, which is no cause for a warning. */
    if (strcmp(fac, "CONFWARN") == 0 &&
        (strstr(buf, "is a consumer property and will be ignored") ||
         strstr(buf, "is a producer property and will be ignored")))
        l = LOG_DEBUG;
    if (log_enabled(l))
        log_kv(l, buf,
               LOG_FIELDS("component", "librdkafka", "facility", fac, "client", rd_kafka_name(rk)));
}

int kafka_apply_props(rd_kafka_conf_t *conf, const char *const *defaults, const config_props *props,
                      char *err, size_t errlen)
{
    char errstr[512];
    /* Every client: our requests are small, and Nagle's algorithm would hold them (ADR 0015). */
    if (rd_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka.socket.nagle.disable: %s", errstr);
        return -1;
    }
    for (const char *const *d = defaults; d && d[0]; d += 2) {
        if (rd_kafka_conf_set(conf, d[0], d[1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "kafka.%s: %s", d[0], errstr);
            return -1;
        }
    }
    for (size_t i = 0; props && i < props->n; i++) {
        if (rd_kafka_conf_set(conf, props->keys[i], props->values[i], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "kafka.%s: %s", props->keys[i], errstr);
            return -1;
        }
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    return 0;
}

int kafka_wakeup_init(wakeup *w, struct event_base *base, rd_kafka_queue_t *q, event_callback_fn fn,
                      void *arg, char *err, size_t errlen)
{
    if (pipe2(w->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    w->ev = event_new(base, w->fds[0], EV_READ | EV_PERSIST, fn, arg);
    event_add(w->ev, NULL);
    rd_kafka_queue_io_event_enable(q, w->fds[1], "1", 1);
    event_active(w->ev, EV_READ, 0); /* what was queued before the line above */
    return 0;
}

void kafka_wakeup_drain(const wakeup *w)
{
    char buf[64];
    while (read(w->fds[0], buf, sizeof(buf)) > 0)
        ;
}

void kafka_wakeup_free(wakeup *w)
{
    if (w->ev)
        event_free(w->ev);
    if (w->fds[0] >= 0) {
        close(w->fds[0]);
        close(w->fds[1]);
    }
    w->ev = NULL;
    w->fds[0] = w->fds[1] = -1;
}

char *kafka_cluster_id(rd_kafka_t *rk)
{
    /* With a timeout of 0 librdkafka answers from its metadata cache and never waits. */
    char *id = rd_kafka_clusterid(rk, 0);
    if (!id)
        return NULL;
    char *copy = xstrdup(id);
    rd_kafka_mem_free(rk, id);
    return copy;
}

/* ---- producer ---- */

/* A broker answered after outage `seen` began: that outage is over. */
static void outage_over(probe *pr, unsigned seen)
{
    pthread_mutex_lock(&pr->lock);
    if (seen > pr->recovered)
        pr->recovered = seen;
    pthread_mutex_unlock(&pr->lock);
}

static void *probe_main(void *arg)
{
    kafka_producer *p = arg;
    probe *pr = &p->pr;
    pthread_mutex_lock(&pr->lock);
    while (!pr->closing) {
        if (pr->recovered == pr->outages) {
            pthread_cond_wait(&pr->cond, &pr->lock);
            continue;
        }
        unsigned seen = pr->outages;
        pthread_mutex_unlock(&pr->lock);
        /* No topic: any broker's answer will do, and none is created on the way. */
        const struct rd_kafka_metadata *md = NULL;
        bool answered =
            rd_kafka_metadata(p->rk, 0, NULL, &md, PROBE_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (answered) {
            outage_over(pr, seen);
            pthread_mutex_lock(&pr->lock);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += PROBE_PAUSE_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&pr->lock);
        if (!pr->closing)
            pthread_cond_timedwait(&pr->cond, &pr->lock, &until);
    }
    pthread_mutex_unlock(&pr->lock);
    return NULL;
}

/* All brokers are down: open an outage and have the probe watch for its end. */
static void outage_begins(kafka_producer *p)
{
    probe *pr = &p->pr;
    pthread_mutex_lock(&pr->lock);
    if (pr->recovered == pr->outages)
        pr->down_since_us = ids_monotonic_us();
    pr->outages++;
    if (!pr->started) {
        pr->started = pthread_create(&pr->thread, NULL, probe_main, p) == 0;
        if (!pr->started)
            log_kv(LOG_WARN, "cannot start the broker probe: readiness returns with a delivery",
                   NULL);
    }
    pthread_cond_signal(&pr->cond);
    pthread_mutex_unlock(&pr->lock);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    kafka_producer *p = opaque;
    if (!m->err) {
        pthread_mutex_lock(&p->pr.lock);
        p->pr.recovered = p->pr.outages;
        pthread_mutex_unlock(&p->pr.lock);
    }
    kafka_delivery d = {
        .err = m->err,
        .errstr = m->err ? rd_kafka_err2str(m->err) : "",
        .maybe_persisted =
            m->err && rd_kafka_message_status(m) != RD_KAFKA_MSG_STATUS_NOT_PERSISTED,
        .too_large = m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        .partition = m->partition,
        .offset = m->offset,
    };
    p->cb(m->_private, &d, p->arg);
}

static void on_producer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    kafka_producer *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        outage_begins(p);
    log_kv(LOG_WARN, reason,
           LOG_FIELDS("component", "librdkafka", "error", rd_kafka_err2name(err)));
}

static void on_producer_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    kafka_producer *p = arg;
    kafka_wakeup_drain(&p->w);
    /* Serve everything queued: the pipe is written only on the empty -> non-empty edge. */
    while (rd_kafka_poll(p->rk, 0) > 0)
        ;
}

kafka_producer *kafka_producer_new(struct event_base *base, const config_props *props,
                                   kafka_delivery_cb cb, void *arg, char *err, size_t errlen)
{
    /* Latency first (ADR 0015): a message leaves at once; under load, messages share requests,
       as they queue behind the one in flight. One request in flight per connection (ADR 0040):
       with more, the broker thread spins while a partition has five messages in flight. */
    /* clang-format off */
    static const char *const defaults[] = {
        "enable.idempotence", "true",  /* no duplicates or reordering on retries */
        "acks",               "all",   /* confirmed once every in-sync replica has it */
        "linger.ms",          "0",
        "max.in.flight",      "1",
        "message.timeout.ms", "30000", /* then the delivery report says it failed */
        "client.id",          "cqrs",
        NULL};
    /* clang-format on */
    kafka_producer *p = xcalloc(1, sizeof(*p));
    p->w.fds[0] = p->w.fds[1] = -1;
    p->cb = cb;
    p->arg = arg;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (kafka_apply_props(conf, defaults, props, err, errlen)) {
        rd_kafka_conf_destroy(conf);
        free(p);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_producer_error);
    char errstr[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!p->rk) { /* conf is still ours on failure */
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka: %s", errstr);
        free(p);
        return NULL;
    }
    /* conf is owned by rk from here on. */
    rd_kafka_queue_t *mainq = rd_kafka_queue_get_main(p->rk);
    int rc = kafka_wakeup_init(&p->w, base, mainq, on_producer_wake, p, err, errlen);
    rd_kafka_queue_destroy(mainq);
    if (rc != 0) {
        rd_kafka_destroy(p->rk);
        free(p);
        return NULL;
    }
    /* Used from the callbacks, which run only when the queue is served: after this returns. */
    pthread_mutex_init(&p->pr.lock, NULL);
    pthread_cond_init(&p->pr.cond, NULL);
    return p;
}

/* Builds librdkafka headers; the caller owns the result until producev takes it. */
static rd_kafka_headers_t *make_headers(const header *h, size_t nh)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(nh);
    for (size_t i = 0; i < nh; i++)
        rd_kafka_header_add(hdrs, h[i].name, -1, h[i].value, (ssize_t)h[i].len);
    return hdrs;
}

kafka_send_result kafka_produce(kafka_producer *p, const char *topic, int partition,
                                const char *key, size_t key_len, const void *value, size_t len,
                                const header *h, size_t nh, void *opaque)
{
    rd_kafka_headers_t *hdrs = make_headers(h, nh);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)(uintptr_t)value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return KAFKA_OK; /* hdrs now belong to the message */
    rd_kafka_headers_destroy(hdrs);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return KAFKA_QUEUE_FULL;
    log_kv(LOG_ERROR, "produce failed", LOG_FIELDS("topic", topic, "error", rd_kafka_err2str(e)));
    return KAFKA_ERROR;
}

/* A varint's bytes for a value below 2^31 (the protocol's lengths): 7 bits a byte. */
static size_t varint_size(size_t v)
{
    size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        n++;
    return n;
}

size_t kafka_message_size(size_t key_len, size_t len, const header *h, size_t nh)
{
    /* librdkafka's bound on a v2 record's framing: length, attributes, timestamp delta,
       offset delta, key length, value length and header count, each varint at its widest. */
    size_t n = 5 + 1 + 10 + 5 + 5 + 5 + 5 + key_len + len;
    for (size_t i = 0; i < nh; i++) {
        size_t name = strlen(h[i].name);
        n += varint_size(name) + name + varint_size(h[i].len) + h[i].len;
    }
    return n;
}

int kafka_producer_outq_len(const kafka_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

char *kafka_producer_cluster_id(kafka_producer *p)
{
    return kafka_cluster_id(p->rk);
}

bool kafka_producer_healthy(kafka_producer *p)
{
    pthread_mutex_lock(&p->pr.lock);
    bool healthy = p->pr.recovered == p->pr.outages;
    pthread_mutex_unlock(&p->pr.lock);
    return healthy;
}

long long kafka_producer_down_since_us(kafka_producer *p)
{
    pthread_mutex_lock(&p->pr.lock);
    long long since = p->pr.recovered == p->pr.outages ? 0 : p->pr.down_since_us;
    pthread_mutex_unlock(&p->pr.lock);
    return since;
}

/* Any handle can ask for metadata: producers and consumers share this. */
int kafka_rk_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    return n;
}

int kafka_partition_count(kafka_producer *p, const char *topic, int timeout_ms)
{
    return kafka_rk_partition_count(p->rk, topic, timeout_ms);
}

int kafka_ensure_topics(kafka_producer *p, const char *const *topics, size_t n, int partitions,
                        int replication, int timeout_ms, char *err, size_t errlen)
{
    /* Ask for metadata first: most starts find every topic in place, and a cluster that creates
       topics on first use (librdkafka's mock) does so here. timeout_ms bounds the whole: with
       Kafka away, a start waits for it once, not once per topic. */
    long long deadline_us = ids_monotonic_us() + (long long)timeout_ms * 1000;
    const char **missing = xcalloc(n ? n : 1, sizeof(*missing));
    size_t nmissing = 0;
    for (size_t i = 0; i < n; i++) {
        long long left_ms = (deadline_us - ids_monotonic_us()) / 1000;
        if (kafka_partition_count(p, topics[i], left_ms > 0 ? (int)left_ms : 0) <= 0)
            missing[nmissing++] = topics[i];
    }
    topics = missing;
    n = nmissing;
    int rc = n == 0 ? 0 : -1;
    rd_kafka_queue_t *q = rd_kafka_queue_new(p->rk);
    rd_kafka_event_t *ev = NULL;
    timeout_ms = (int)((deadline_us - ids_monotonic_us()) / 1000);
    if (n == 0)
        goto out;
    if (timeout_ms <= 0) {
        snprintf(err, errlen, "no metadata for topic %s from Kafka in time", topics[0]);
        goto out;
    }
    if (kafka_create_topics_send(p->rk, topics, n, partitions, replication, timeout_ms, q, err,
                                 errlen) != 0)
        goto out;
    ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    if (!ev)
        snprintf(err, errlen, "create topics: no answer within %d ms", timeout_ms);
    else if (kafka_create_topics_read(ev, err, errlen) == KAFKA_TOPICS_DONE)
        rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    free(missing);
    rd_kafka_queue_destroy(q);
    return rc;
}

rd_kafka_t *kafka_producer_rk(kafka_producer *p)
{
    return p->rk;
}

int kafka_producer_flush(kafka_producer *p, int timeout_ms)
{
    return rd_kafka_flush(p->rk, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}

void kafka_producer_purge(kafka_producer *p)
{
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    /* The purged messages' reports are queued at once; a final flush serves them. */
    rd_kafka_flush(p->rk, 1000);
}

/* Stops the probe (waiting for its metadata request, PROBE_TIMEOUT_MS at most). */
static void probe_stop(probe *pr)
{
    pthread_mutex_lock(&pr->lock);
    pr->closing = true;
    pthread_cond_signal(&pr->cond);
    bool started = pr->started;
    pthread_mutex_unlock(&pr->lock);
    if (started)
        pthread_join(pr->thread, NULL);
    pthread_cond_destroy(&pr->cond);
    pthread_mutex_destroy(&pr->lock);
}

void kafka_producer_free(kafka_producer *p)
{
    if (!p)
        return;
    probe_stop(&p->pr);
    rd_kafka_destroy(p->rk);
    kafka_wakeup_free(&p->w);
    free(p);
}
