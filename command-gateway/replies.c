/*
 * replies.c: one replies consumer per gateway process, whatever its number of workers
 * (ADR 0019). A sync request names one of the process's routable partitions and registers its
 * command id with its worker's inbox; the consumer, on the main thread's loop, finds the inbox
 * of each reply and hands the reply over with a wake-up of that worker's loop.
 */
#include "replies.h"

#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "core/strmap.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A reply waiting in an inbox; id and value live in the same allocation. */
typedef struct queued {
    struct queued *next;
    size_t len;
    char *value;
    char id[];
} queued;

struct replies_inbox {
    replies *r;
    struct event *deliver_ev; /* on the worker's base, activated from the consumer's thread */
    struct event *routable_ev;
    replies_deliver_cb deliver;
    replies_routable_cb routable;
    void *arg;
    queued *head, *tail; /* under r->lock */
    struct replies_inbox *next;
};

struct replies {
    pthread_mutex_t lock; /* everything below but the consumer */
    kafka_consumer *consumer;
    strmap *waiting; /* command id -> the inbox of the worker whose request waits */
    replies_inbox *inboxes;
    int *owned; /* partitions named in commands: assigned, and read from their end */
    size_t nowned;
    int *warming; /* assigned, end not reached yet */
    size_t nwarming;
    size_t next_owned; /* round-robin cursor over owned */
    metrics_counter *m_unmatched;
    metrics_histogram *m_transit;
};

replies *replies_new(metrics *m)
{
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    replies *r = xcalloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->waiting = strmap_new();
    r->m_unmatched =
        metrics_counter_get(m, "gateway_replies_unmatched_total",
                            "replies with no waiting request here (timed out or async)", NULL);
    r->m_transit = metrics_histogram_get(
        m, "gateway_reply_transit_seconds",
        "time from a reply's timestamp (its produce by the processor) to its arrival here; "
        "the timestamp has millisecond resolution",
        bounds, sizeof(bounds) / sizeof(bounds[0]));
    return r;
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    replies_inbox *in = arg;
    pthread_mutex_lock(&in->r->lock);
    queued *q = in->head;
    in->head = in->tail = NULL;
    pthread_mutex_unlock(&in->r->lock);
    replies_msg batch[64];
    while (q) {
        queued *first = q;
        size_t n = 0;
        for (; q && n < 64; q = q->next, n++)
            batch[n] = (replies_msg){.command_id = q->id, .value = q->value, .len = q->len};
        in->deliver(batch, n, in->arg);
        while (first != q) {
            queued *next = first->next;
            free(first);
            first = next;
        }
    }
}

static void on_routable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    replies_inbox *in = arg;
    in->routable(in->arg);
}

replies_inbox *replies_attach(replies *r, struct event_base *wbase, replies_deliver_cb deliver,
                              replies_routable_cb routable, void *arg)
{
    replies_inbox *in = xcalloc(1, sizeof(*in));
    in->r = r;
    in->deliver = deliver;
    in->routable = routable;
    in->arg = arg;
    in->deliver_ev = event_new(wbase, -1, 0, on_deliver, in);
    in->routable_ev = event_new(wbase, -1, 0, on_routable, in);
    pthread_mutex_lock(&r->lock);
    in->next = r->inboxes;
    r->inboxes = in;
    pthread_mutex_unlock(&r->lock);
    return in;
}

typedef struct drop_ctx {
    const replies_inbox *in;
    char **ids;
    size_t n;
} drop_ctx;

static void collect_inbox(const char *key, void *value, void *arg)
{
    drop_ctx *c = arg;
    if (value == c->in)
        c->ids[c->n++] = xstrdup(key);
}

void replies_detach(replies *r, replies_inbox *in)
{
    if (!in)
        return;
    pthread_mutex_lock(&r->lock);
    for (replies_inbox **p = &r->inboxes; *p; p = &(*p)->next) {
        if (*p == in) {
            *p = in->next;
            break;
        }
    }
    drop_ctx c = {.in = in, .ids = xcalloc(strmap_size(r->waiting) + 1, sizeof(char *))};
    strmap_each(r->waiting, collect_inbox, &c);
    for (size_t i = 0; i < c.n; i++) {
        strmap_remove(r->waiting, c.ids[i]);
        free(c.ids[i]);
    }
    free(c.ids);
    queued *q = in->head;
    pthread_mutex_unlock(&r->lock);
    while (q) {
        queued *next = q->next;
        free(q);
        q = next;
    }
    event_free(in->deliver_ev);
    event_free(in->routable_ev);
    free(in);
}

int replies_expect(replies *r, replies_inbox *in, const char *command_id)
{
    int partition = -1;
    pthread_mutex_lock(&r->lock);
    if (r->nowned > 0 && !strmap_get(r->waiting, command_id)) {
        strmap_put(r->waiting, command_id, in);
        partition = r->owned[r->next_owned++ % r->nowned];
    }
    pthread_mutex_unlock(&r->lock);
    return partition;
}

void replies_forget(replies *r, replies_inbox *in, const char *command_id)
{
    pthread_mutex_lock(&r->lock);
    if (strmap_get(r->waiting, command_id) == in)
        strmap_remove(r->waiting, command_id);
    pthread_mutex_unlock(&r->lock);
}

bool replies_ready(replies *r)
{
    pthread_mutex_lock(&r->lock);
    bool ready = r->nowned > 0;
    pthread_mutex_unlock(&r->lock);
    return ready;
}

/* Under the lock: queues a copy of the reply for the inbox, waking its loop if it was idle. */
static void hand_over(replies_inbox *in, const char *id, const kafka_message *m)
{
    size_t idlen = strlen(id);
    queued *q = xmalloc(sizeof(*q) + idlen + 1 + m->len + 1);
    q->next = NULL;
    memcpy(q->id, id, idlen + 1);
    q->value = q->id + idlen + 1;
    memcpy(q->value, m->value, m->len);
    q->value[m->len] = '\0';
    q->len = m->len;
    if (in->tail) {
        in->tail->next = q;
    } else {
        in->head = q;
        event_active(in->deliver_ev, 0, 0);
    }
    in->tail = q;
}

/* The command id of a reply: its key, or else its body's command_id. Caller frees. */
static char *reply_id(const kafka_message *m)
{
    if (m->key && m->key_len > 0 && m->key_len < 64)
        return xstrndup(m->key, m->key_len);
    json_t *reply = json_loadb(m->value, m->len, 0, NULL);
    const char *id = json_string_value(json_object_get(reply, "command_id"));
    char *out = id ? xstrdup(id) : NULL;
    json_decref(reply);
    return out;
}

static void on_wake(void *arg)
{
    replies *r = arg;
    kafka_message msgs[256];
    size_t n;
    while ((n = kafka_consumer_poll(r->consumer, msgs, 256)) > 0) {
        long long now_us = ids_now_us();
        for (size_t i = 0; i < n; i++) {
            if (msgs[i].timestamp_ms >= 0)
                metrics_observe_us(r->m_transit, now_us - msgs[i].timestamp_ms * 1000);
            char *id = reply_id(&msgs[i]);
            pthread_mutex_lock(&r->lock);
            replies_inbox *in = id ? strmap_remove(r->waiting, id) : NULL;
            if (in)
                hand_over(in, id, &msgs[i]);
            pthread_mutex_unlock(&r->lock);
            if (!in)
                metrics_add(r->m_unmatched, 1);
            free(id);
        }
    }
}

/* Under the lock: logs the routable count, and wakes the workers when routing begins. */
static void owned_changed(replies *r, bool had)
{
    if (!had && r->nowned > 0) {
        for (replies_inbox *in = r->inboxes; in; in = in->next)
            event_active(in->routable_ev, 0, 0);
    }
    LOG_KV(LOG_INFO, "reply partitions owned", LOG_NUM("count", r->nowned));
}

/*
 * Assigned reply partitions start at their end (auto.offset.reset=latest), which the consumer
 * resolves some time after the assignment: a reply written before then would be skipped. So a
 * partition is named in commands only once the consumer reports reaching its end.
 */
static bool on_assign(const int *partitions, size_t n, bool assigned, void *arg)
{
    replies *r = arg;
    pthread_mutex_lock(&r->lock);
    bool had = r->nowned > 0;
    if (assigned) {
        r->warming = xrealloc(r->warming, (r->nwarming + n + 1) * sizeof(int));
        memcpy(r->warming + r->nwarming, partitions, n * sizeof(int));
        r->nwarming += n;
    } else {
        r->nwarming = kafka_partitions_remove(r->warming, r->nwarming, partitions, n);
        r->nowned = kafka_partitions_remove(r->owned, r->nowned, partitions, n);
        owned_changed(r, had);
    }
    pthread_mutex_unlock(&r->lock);
    return false;
}

static void on_eof(int partition, void *arg)
{
    replies *r = arg;
    pthread_mutex_lock(&r->lock);
    size_t before = r->nwarming;
    r->nwarming = kafka_partitions_remove(r->warming, r->nwarming, &partition, 1);
    if (r->nwarming != before) { /* else routable already */
        bool had = r->nowned > 0;
        r->owned = xrealloc(r->owned, (r->nowned + 1) * sizeof(int));
        r->owned[r->nowned++] = partition;
        owned_changed(r, had);
    }
    pthread_mutex_unlock(&r->lock);
}

int replies_start(replies *r, struct event_base *base, const config_props *kafka_props,
                  const char *group, const char *topic, char *err, size_t errlen)
{
    config_props props = {0};
    for (size_t i = 0; kafka_props && i < kafka_props->n; i++)
        config_props_set(&props, kafka_props->keys[i], kafka_props->values[i]);
    /* Replies are only useful while someone waits: start from the end, never commit. */
    config_props_set(&props, "auto.offset.reset", "latest");
    /* A replica joining or leaving moves only the partitions it must: replies to the others'
       partitions keep flowing through a rebalance. */
    if (!config_props_get(&props, "partition.assignment.strategy"))
        config_props_set(&props, "partition.assignment.strategy", "cooperative-sticky");
    config_props_set(&props, "enable.partition.eof", "true"); /* see on_assign() */
    r->consumer =
        kafka_consumer_new(base, &props, group, topic, on_wake, on_assign, r, err, errlen);
    config_props_free(&props);
    if (!r->consumer)
        return -1;
    kafka_consumer_set_eof_cb(r->consumer, on_eof);
    return 0;
}

void replies_free(replies *r)
{
    if (!r)
        return;
    kafka_consumer_free(r->consumer);
    while (r->inboxes)
        replies_detach(r, r->inboxes);
    strmap_free(r->waiting);
    free(r->owned);
    free(r->warming);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
