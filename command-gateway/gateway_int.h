/*
 * gateway_int.h: the innards of a gateway worker, for the modules that serve its requests
 * (routes, commands, replyroute, accepted, pending, reads, queries). Not for main.c, nor for
 * any header: module headers name the gateway through gateway.h only.
 */
#ifndef CQRS_GATEWAY_INT_H
#define CQRS_GATEWAY_INT_H

#include "gateway.h"

#include "core/metrics.h"
#include "core/strmap.h"
#include "domain/domain.h"
#include "http/httpd.h"
#include "kafka/kafka.h"
#include "pg/pgconn.h"
#include "retryafter.h"
#include "sizelimits.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct event;
struct pending;
struct readwait;

struct gateway {
    const gateway_config *cfg; /* borrowed from main */
    gateway_shared *shared;
    struct event_base *base;
    domain_registry *domains;
    httpd *http;
    kafka_producer *producer;
    kafka_topics_keeper *topics; /* when the topics could not be created at start */
    replies_inbox *inbox;        /* where the replies to this worker's requests arrive */
    pgconn *pg;                  /* read-write: idempotency claims, command records */
    struct pgplans *plans;       /* pg's plan mode (ADR 0037, ADR 0039) */
    pgconn *pg_read;             /* read-only sessions: projection reads */
    bool reads_replica; /* pg_read may be a standby, behind the writer (pg.read_conninfo) */
    struct readwait *readwait;
    metrics *metrics;  /* shared->metrics */
    sizelimits limits; /* the body and message bounds, settled at start */
    char *topic_commands;
    char *topic_replies;
    strmap *parked;       /* command id -> struct pending, while the request waits */
    struct pending *held; /* sync requests waiting for the process to route replies */
    size_t nheld;
    bool stopping;
    bool flushed;               /* gateway_flush() ran: the producer holds nothing more */
    size_t live;                /* POST requests held, not answered yet */
    struct pending **accepting; /* 202s waiting for their record, see accepted.h */
    size_t naccepting, accepting_cap;
    bool accept_inflight; /* an INSERT of accepted records is out */
    struct event *accept_flush_ev;
    struct event *drain; /* while stopping: ends the loop once nothing is held */
    long long drain_until_us;
    retry_after retry; /* the Retry-After of its 503s */
    metrics_counter *m_produced, *m_produce_failed, *m_replies, *m_replies_unmatched, *m_replayed;
    metrics_histogram *m_latency;
    metrics_histogram *m_kafka_ack;  /* produce -> Kafka's confirmation */
    metrics_histogram *m_reply_wait; /* sync: produce -> the reply */
    metrics_gauge *m_parked, *m_connections, *m_unanswered;
    metrics_counter *m_accept_paused;
    metrics_counter *m_auth_refused, *m_rate_limited;
    metrics_gauge *m_reads_waiting;      /* reads waiting for min_version */
    metrics_counter *m_read_lag_rereads; /* re-reads of a standby that had not replayed yet */
    metrics_counter *m_status[500];      /* answers by status 100..599, registered on first use */
    char *openapi;                       /* GET /openapi.json: the document, built at start-up */
    size_t openapi_len;
};

/* Writes the standard answer for a failure and counts it. */
void gateway_problem(gateway *g, http_req *req, json_t *problem);

#endif
