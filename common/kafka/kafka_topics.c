/* kafka_topics.c: topics created in the background until Kafka has them all. */
#include "kafka/kafka.h"
#include "kafka/kafka_int.h"

#include "core/log.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEEPER_FIRST_MS   1000
#define KEEPER_MAX_MS     30000
#define KEEPER_REQUEST_MS 10000

struct kafka_topics_keeper {
    rd_kafka_t *rk; /* the producer's */
    char **topics;
    size_t n;
    int partitions, replication;
    rd_kafka_queue_t *q; /* the CreateTopics results */
    wakeup w;
    struct event *timer;
    int backoff_ms;
    long long attempts; /* CreateTopics requests sent */
};

static void keeper_retry(kafka_topics_keeper *k, const char *why)
{
    LOG_KV(LOG_WARN, "topics still missing; asking Kafka again", LOG_STR("error", why),
           LOG_NUM("attempt", k->attempts), LOG_NUM("retry_in_ms", k->backoff_ms));
    struct timeval tv = {k->backoff_ms / 1000, (suseconds_t)(k->backoff_ms % 1000) * 1000};
    evtimer_add(k->timer, &tv);
    k->backoff_ms = k->backoff_ms * 2 > KEEPER_MAX_MS ? KEEPER_MAX_MS : k->backoff_ms * 2;
}

kafka_topics_state kafka_topics_verdict(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
    case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
        return KAFKA_TOPICS_DONE;
    /* Asking again will not change the broker's mind: an operator's part now. */
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        return KAFKA_TOPICS_REFUSED;
    default:
        return KAFKA_TOPICS_ASKING;
    }
}

int kafka_create_topics_send(rd_kafka_t *rk, const char *const *topics, size_t n, int partitions,
                             int replication, int timeout_ms, rd_kafka_queue_t *q, char *err,
                             size_t errlen)
{
    char errstr[512];
    rd_kafka_NewTopic_t **nt = xcalloc(n ? n : 1, sizeof(*nt));
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    int rc = 0;
    if (rd_kafka_AdminOptions_set_operation_timeout(opt, timeout_ms, errstr, sizeof(errstr)) ||
        rd_kafka_AdminOptions_set_request_timeout(opt, timeout_ms, errstr, sizeof(errstr))) {
        snprintf(err, errlen, "create topics: %s", errstr);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, replication, errstr, sizeof(errstr));
        if (!nt[i]) {
            snprintf(err, errlen, "topic %s: %s", topics[i], errstr);
            rc = -1;
        }
    }
    /* librdkafka copies the topics and the options: they may go at once. */
    if (rc == 0)
        rd_kafka_CreateTopics(rk, nt, n, opt, q);
    for (size_t i = 0; i < n; i++) {
        if (nt[i])
            rd_kafka_NewTopic_destroy(nt[i]);
    }
    free(nt);
    rd_kafka_AdminOptions_destroy(opt);
    return rc;
}

kafka_topics_state kafka_create_topics_read(rd_kafka_event_t *ev, char *why, size_t whylen)
{
    if (rd_kafka_event_error(ev)) {
        snprintf(why, whylen, "create topics: %s", rd_kafka_event_error_string(ev));
        return KAFKA_TOPICS_ASKING;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    for (size_t i = 0; i < cnt; i++) {
        kafka_topics_state v = kafka_topics_verdict(rd_kafka_topic_result_error(res[i]));
        if (v != KAFKA_TOPICS_DONE) {
            snprintf(why, whylen, "topic %s: %s", rd_kafka_topic_result_name(res[i]),
                     rd_kafka_topic_result_error_string(res[i]));
            return v;
        }
    }
    return KAFKA_TOPICS_DONE;
}

/* Asks Kafka to create every topic; one that exists already counts as created. */
static void keeper_ask(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    kafka_topics_keeper *k = arg;
    char err[512];
    k->attempts++;
    if (kafka_create_topics_send(k->rk, (const char *const *)k->topics, k->n, k->partitions,
                                 k->replication, KEEPER_REQUEST_MS, k->q, err, sizeof(err)) != 0)
        keeper_retry(k, err);
}

static void keeper_result(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    kafka_topics_keeper *k = arg;
    kafka_wakeup_drain(&k->w);
    rd_kafka_event_t *ev;
    while ((ev = rd_kafka_queue_poll(k->q, 0)) != NULL) {
        if (!rd_kafka_event_error(ev) &&
            rd_kafka_event_type(ev) != RD_KAFKA_EVENT_CREATETOPICS_RESULT) {
            rd_kafka_event_destroy(ev);
            continue;
        }
        char why[600] = "";
        kafka_topics_state v = kafka_create_topics_read(ev, why, sizeof(why));
        rd_kafka_event_destroy(ev);
        if (v == KAFKA_TOPICS_REFUSED)
            LOG_KV(LOG_ERROR,
                   "not allowed to create the topics; they must be created by an operator "
                   "(topics.partitions and topics.replication say how)",
                   LOG_STR("error", why), LOG_NUM("attempt", k->attempts));
        else if (v == KAFKA_TOPICS_ASKING)
            keeper_retry(k, why);
        else
            LOG_KV(LOG_INFO, "topics created", LOG_NUM("count", k->n),
                   LOG_NUM("attempts", k->attempts));
    }
}

kafka_topics_keeper *kafka_topics_keeper_new(struct event_base *base, kafka_producer *p,
                                             const char *const *topics, size_t n, int partitions,
                                             int replication)
{
    kafka_topics_keeper *k = xcalloc(1, sizeof(*k));
    k->rk = kafka_producer_rk(p);
    k->topics = xcalloc(n ? n : 1, sizeof(*k->topics));
    for (size_t i = 0; i < n; i++)
        k->topics[i] = xstrdup(topics[i]);
    k->n = n;
    k->partitions = partitions;
    k->replication = replication;
    k->backoff_ms = KEEPER_FIRST_MS;
    k->w.fds[0] = k->w.fds[1] = -1;
    k->q = rd_kafka_queue_new(k->rk);
    k->timer = evtimer_new(base, keeper_ask, k);
    char err[256];
    if (kafka_wakeup_init(&k->w, base, k->q, keeper_result, k, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "topics cannot be created in the background", LOG_FIELDS("error", err));
        kafka_topics_keeper_free(k);
        return NULL;
    }
    struct timeval now = {0, 0};
    evtimer_add(k->timer, &now);
    return k;
}

void kafka_topics_keeper_free(kafka_topics_keeper *k)
{
    if (!k)
        return;
    if (k->timer)
        event_free(k->timer);
    kafka_wakeup_free(&k->w);
    /* A request still in flight holds a reference to the queue of its own. */
    rd_kafka_queue_destroy(k->q);
    for (size_t i = 0; i < k->n; i++)
        free(k->topics[i]);
    free(k->topics);
    free(k);
}
