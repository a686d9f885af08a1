/*
 * commands.c: the write path. A command is validated, produced to Kafka keyed by aggregate id and,
 * in sync mode, parked until its reply arrives on a replies partition this replica owns.
 */
#include "gateway.h"

#include "ids.h"
#include "intake.h"
#include "log.h"
#include "problem.h"
#include "xalloc.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* One write request from arrival to answer; lives until both the answer and the delivery report. */
typedef struct pending {
    gateway *g;
    http_req *req; /* NULL once answered or gone */
    intake in;
    struct event *deadline;
    bool dr_done;     /* Kafka's delivery report has been seen */
    bool wants_reply; /* sync with a reply partition: answer from the reply */
    bool parked;      /* present in g->parked */
    bool recording;   /* the "accepted" record is being written */
} pending;

static void pending_free(pending *p)
{
    if (p->deadline)
        event_free(p->deadline);
    intake_clear(&p->in);
    free(p);
}

/* Freed once answered (or gone), reported on by Kafka and no longer recorded in PostgreSQL. */
static void pending_maybe_free(pending *p)
{
    if (!p->req && p->dr_done && !p->recording)
        pending_free(p);
}

/* The request got its answer (or its client left): drop every reference to it. */
static void pending_done(pending *p)
{
    p->req = NULL;
    if (p->parked) {
        strmap_remove(p->g->parked, p->in.command_id);
        p->parked = false;
    }
    if (p->deadline)
        event_del(p->deadline);
    pending_maybe_free(p);
}

static void set_common_headers(pending *p)
{
    http_req_set_header(p->req, "Idempotency-Key", p->in.idempotency_key);
}

static void answer_problem(pending *p, json_t *problem)
{
    set_common_headers(p);
    json_object_set_new(problem, "command_id", json_string(p->in.command_id));
    gateway_problem(p->g, p->req, problem);
    pending_done(p);
}

/* 202: the command is durably in Kafka; its status is at Location. */
static void send_accepted(pending *p)
{
    char location[64];
    snprintf(location, sizeof(location), "/v1/commands/%s", p->in.command_id);
    set_common_headers(p);
    http_req_set_header(p->req, "Location", location);
    if (p->in.respond_async)
        http_req_set_header(p->req, "Preference-Applied", "respond-async");
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "command_id", p->in.command_id, "status", "accepted",
                  "aggregate_type", domain_command_aggregate(p->in.cmd), "aggregate_id",
                  p->in.aggregate_id, "idempotency_key", p->in.idempotency_key);
    http_req_reply_json(p->req, 202, body);
    pending_done(p);
}

static void on_recorded(const pgconn_result *r, void *arg)
{
    pending *p = arg;
    p->recording = false;
    if (pgconn_result_status(r) != PGCONN_OK)
        log_kv(LOG_WARN, "accepted command not recorded; its status appears once applied",
               LOG_FIELDS("command_id", p->in.command_id, "error", pgconn_result_error(r)));
    if (p->req)
        send_accepted(p);
    else
        pending_maybe_free(p);
}

/*
 * Records the command as accepted before answering 202, so that its Location answers at once
 * instead of 404 until the processor gets to it. The processor's own record replaces this one;
 * if the processor was first, or the key is taken, nothing is written. A database that cannot
 * take the record does not turn the 202 into an error: the command is in Kafka either way.
 */
static void answer_accepted(pending *p)
{
    static const char sql[] =
        "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, aggregate_id, "
        "status) VALUES ($1, $2, $3, $4, $5, $6, 'accepted') ON CONFLICT DO NOTHING";
    const char *v[] = {p->in.command_id,
                       p->g->cfg->tenant_default,
                       p->in.idempotency_key,
                       domain_command_type(p->in.cmd),
                       domain_command_aggregate(p->in.cmd),
                       p->in.aggregate_id};
    if (p->deadline)
        event_del(p->deadline);
    if (pgconn_query(p->g->pg, sql, 6, v, on_recorded, p) == 0)
        p->recording = true;
    else
        send_accepted(p);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pending *p = arg;
    if (!p->req || p->recording)
        return;
    if (!p->dr_done) {
        /* Kafka has not confirmed: the client must not take it as accepted. A retry with the
           same Idempotency-Key is safe either way. */
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                      "Kafka did not confirm the command in time; retry with "
                                      "the same Idempotency-Key",
                                      NULL));
        return;
    }
    answer_accepted(p);
}

static void on_gone(http_req *req, void *arg)
{
    (void)req;
    pending_done(arg);
}

static long long wait_ms(const gateway *g, const intake *in)
{
    if (in->wait_ms < 0)
        return g->cfg->sync_timeout_ms;
    return in->wait_ms < g->cfg->sync_max_wait_ms ? in->wait_ms : g->cfg->sync_max_wait_ms;
}

void commands_post(gateway *g, http_req *req)
{
    if (g->stopping) {
        gateway_problem(g, req, problem_new(PROBLEM_UNAVAILABLE, "shutting down", NULL));
        return;
    }
    if (strmap_size(g->parked) >= (size_t)g->cfg->max_parked) {
        gateway_problem(g, req,
                        problem_new(PROBLEM_UNAVAILABLE, "too many waiting requests", NULL));
        return;
    }
    pending *p = xcalloc(1, sizeof(*p));
    p->g = g;
    size_t len;
    const char *body = http_req_body(req, &len);
    intake_headers h = {
        .idempotency_key = http_req_header(req, "Idempotency-Key"),
        .if_match = http_req_header(req, "If-Match"),
        .prefer = http_req_header(req, "Prefer"),
        .traceparent = http_req_header(req, "traceparent"),
    };
    json_t *problem = intake_parse(&p->in, g->domains, body, len, &h);
    if (problem) {
        free(p);
        gateway_problem(g, req, problem);
        return;
    }
    p->req = req;
    http_req_on_gone(req, on_gone, p);

    int reply_partition = -1;
    if (!p->in.respond_async && g->nowned > 0)
        reply_partition = g->owned[g->next_owned++ % g->nowned];
    p->wants_reply = reply_partition >= 0;

    char now[IDS_TIME_LEN];
    ids_now_rfc3339(now);
    envelope e = {
        .id = p->in.command_id,
        .source = "/command-gateway",
        .type = (char *)domain_command_type(p->in.cmd),
        .subject = p->in.aggregate_id,
        .time = now,
        .tenant = g->cfg->tenant_default,
        .idempotency_key = p->in.idempotency_key,
        .traceparent = p->in.traceparent,
        .expected_version = p->in.expected_version,
        .reply_partition = reply_partition,
    };
    header hdrs[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, hdrs, scratch);
    char *value = json_dumps(p->in.payload, JSON_COMPACT);
    kafka_send_result r =
        kafka_produce(g->producer, g->topic_commands, -1, p->in.aggregate_id,
                      strlen(p->in.aggregate_id), value, strlen(value), hdrs, nh, p);
    free(value);
    if (r != KAFKA_OK) {
        metrics_add(g->m_produce_failed, 1);
        p->dr_done = true; /* no report will come */
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                      r == KAFKA_QUEUE_FULL ? "the Kafka producer queue is full"
                                                            : "Kafka refused the command",
                                      NULL));
        return;
    }
    if (p->wants_reply) {
        strmap_put(g->parked, p->in.command_id, p);
        p->parked = true;
    }
    /* Bounds the wait for the delivery report too, so a dead Kafka never hangs a client. */
    long long ms = wait_ms(g, &p->in);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    p->deadline = evtimer_new(g->base, on_deadline, p);
    evtimer_add(p->deadline, &tv);
}

void commands_on_delivery(void *opaque, int err, const char *errstr, int partition,
                          long long offset, void *arg)
{
    (void)partition, (void)offset;
    gateway *g = arg;
    pending *p = opaque;
    p->dr_done = true;
    if (err)
        metrics_add(g->m_produce_failed, 1);
    else
        metrics_add(g->m_produced, 1);
    if (!p->req) { /* answered from its reply already, timed out, or the client left */
        pending_maybe_free(p);
        return;
    }
    if (err) {
        log_kv(LOG_WARN, "command not delivered",
               LOG_FIELDS("command_id", p->in.command_id, "error", errstr));
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE, errstr, NULL));
    } else if (!p->wants_reply) {
        answer_accepted(p);
    }
    /* otherwise the request stays parked until its reply or its deadline */
}

/* Answers a parked request from the processor's reply {command_id, http_status, body}. */
static void answer_reply(pending *p, json_t *reply)
{
    int status = (int)json_integer_value(json_object_get(reply, "http_status"));
    json_t *body = json_object_get(reply, "body");
    if (status < 200 || status > 599 || !json_is_object(body)) {
        answer_problem(p, problem_new(PROBLEM_INTERNAL, "malformed reply", NULL));
        return;
    }
    body = json_deep_copy(body);
    json_object_set_new(body, "idempotency_key", json_string(p->in.idempotency_key));
    set_common_headers(p);
    json_t *version = json_object_get(body, "version");
    if (json_is_integer(version)) {
        char etag[32];
        snprintf(etag, sizeof(etag), "\"%lld\"", (long long)json_integer_value(version));
        http_req_set_header(p->req, "ETag", etag);
    }
    if (status >= 400) {
        gateway_problem(p->g, p->req, body);
    } else {
        if (status == 201) {
            char *loc = xasprintf("/v1/aggregates/%s/%s", domain_command_aggregate(p->in.cmd),
                                  p->in.aggregate_id);
            http_req_set_header(p->req, "Location", loc);
            free(loc);
        }
        http_req_reply_json(p->req, status, body);
    }
    pending_done(p);
}

void commands_on_replies(void *arg)
{
    gateway *g = arg;
    kafka_message msgs[256];
    size_t n;
    while ((n = kafka_consumer_poll(g->replies, msgs, 256)) > 0) {
        for (size_t i = 0; i < n; i++) {
            json_t *reply = json_loadb(msgs[i].value, msgs[i].len, 0, NULL);
            const char *id = json_string_value(json_object_get(reply, "command_id"));
            pending *p = id ? strmap_get(g->parked, id) : NULL;
            if (p && p->req) {
                metrics_add(g->m_replies, 1);
                answer_reply(p, reply);
            } else {
                metrics_add(g->m_replies_unmatched, 1);
            }
            json_decref(reply);
        }
    }
}

void commands_on_assign(const int *partitions, size_t n, bool assigned, void *arg)
{
    gateway *g = arg;
    if (assigned) {
        g->owned = xrealloc(g->owned, (g->nowned + n) * sizeof(int));
        memcpy(g->owned + g->nowned, partitions, n * sizeof(int));
        g->nowned += n;
    } else {
        size_t k = 0;
        for (size_t i = 0; i < g->nowned; i++) {
            bool revoked = false;
            for (size_t j = 0; j < n; j++)
                revoked |= g->owned[i] == partitions[j];
            if (!revoked)
                g->owned[k++] = g->owned[i];
        }
        g->nowned = k;
    }
    char count[16];
    snprintf(count, sizeof(count), "%zu", g->nowned);
    log_kv(LOG_INFO, "reply partitions owned", LOG_FIELDS("count", count));
}

static void collect(const char *key, void *value, void *arg)
{
    (void)key;
    pending ***out = arg;
    *(*out)++ = value;
}

void commands_release_parked(gateway *g)
{
    size_t n = strmap_size(g->parked);
    if (n == 0)
        return;
    pending **all = xmalloc(n * sizeof(*all)), **cur = all;
    strmap_each(g->parked, collect, &cur);
    for (size_t i = 0; i < n; i++) {
        if (all[i]->req && all[i]->dr_done)
            send_accepted(all[i]); /* shutting down: no time to record them */
    }
    free(all);
}
