/*
 * commands.c: the write path. A command is validated, produced to Kafka keyed by aggregate id and,
 * in sync mode, parked until its reply arrives on a replies partition this replica owns.
 */
#include "gateway.h"

#include "ids.h"
#include "intake.h"
#include "log.h"
#include "problem.h"
#include "trace.h"
#include "xalloc.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* One write request from arrival to answer; lives while anything still refers to it. */
typedef struct pending {
    gateway *g;
    http_req *req; /* NULL once answered or gone */
    char tenant[AUTH_TENANT_MAX + 1];
    char traceparent[TRACE_PARENT_LEN]; /* this gateway's span in the request's trace */
    char trace_id[TRACE_ID_LEN];        /* for log lines */
    intake in;
    char fingerprint[IDS_UUID_LEN]; /* of the request, stored with a client's key */
    struct event *deadline;
    long long produced_us; /* monotonic, when it was handed to the producer */
    bool claimed;          /* the client's key is recorded as ours (status accepted) */
    bool claim_made;       /* ... by this request's INSERT, not taken over from another */
    bool dr_pending;       /* a Kafka delivery report is due */
    bool delivered;        /* Kafka confirmed the command */
    bool in_query;         /* a PostgreSQL query holds a reference */
    bool wants_reply;      /* sync with a reply partition: answer from the reply */
    bool parked;           /* present in g->parked */
    bool wait_over;        /* the client's wait ended before Kafka confirmed: 202 once it does */
    long long arrived_us;  /* monotonic */
} pending;

static void pending_free(pending *p)
{
    if (p->deadline)
        event_free(p->deadline);
    intake_clear(&p->in);
    free(p);
}

/* Freed once answered (or gone) and no longer referred to by Kafka or PostgreSQL. */
static void pending_maybe_free(pending *p)
{
    if (!p->req && !p->dr_pending && !p->in_query)
        pending_free(p);
}

/* The request got its answer (or its client left): drop every reference to it. */
static void pending_done(pending *p)
{
    if (p->req)
        p->g->live--;
    p->req = NULL;
    if (p->parked) {
        strmap_remove(p->g->parked, p->in.command_id);
        metrics_gauge_add(p->g->m_parked, -1);
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
    if (!json_object_get(problem, "command_id"))
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

/*
 * Answers a finished command again: its stored status and body (a result or a problem), with
 * Idempotent-Replayed: true. Takes ownership of body.
 */
static void send_result(pending *p, int status, json_t *body, bool replayed)
{
    json_object_set_new(body, "idempotency_key", json_string(p->in.idempotency_key));
    set_common_headers(p);
    if (replayed)
        http_req_set_header(p->req, "Idempotent-Replayed", "true");
    json_t *version = json_object_get(body, "version");
    if (status < 300 && json_is_integer(version)) {
        char etag[32];
        snprintf(etag, sizeof(etag), "\"%lld\"", (long long)json_integer_value(version));
        http_req_set_header(p->req, "ETag", etag);
    }
    if (status >= 400) {
        gateway_problem(p->g, p->req, body);
    } else {
        if (status == 201) {
            char *id = http_uri_escape(p->in.aggregate_id);
            char *loc = xasprintf("/v1/aggregates/%s/%s", domain_command_aggregate(p->in.cmd), id);
            free(id);
            http_req_set_header(p->req, "Location", loc);
            free(loc);
        }
        http_req_reply_json(p->req, status, body);
    }
    pending_done(p);
}

/* The accepted records of one INSERT. */
typedef struct accept_batch {
    gateway *g;
    pending **items;
    size_t n;
} accept_batch;

static void accept_flush(gateway *g);

/* Answers the batch's requests (whether or not their records were written) and frees it. */
static void accept_batch_done(accept_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        pending *p = b->items[i];
        p->in_query = false;
        if (p->req)
            send_accepted(p);
        else
            pending_maybe_free(p);
    }
    free(b->items);
    free(b);
}

static void on_recorded(const pgconn_result *r, void *arg)
{
    accept_batch *b = arg;
    gateway *g = b->g;
    g->accept_inflight = false;
    if (pgconn_result_status(r) != PGCONN_OK) {
        char n[24];
        snprintf(n, sizeof(n), "%zu", b->n);
        log_kv(LOG_WARN, "accepted commands not recorded; their status appears once applied",
               LOG_FIELDS("count", n, "error", pgconn_result_error(r)));
    }
    accept_batch_done(b);
    accept_flush(g); /* what gathered while this one was written */
}

/*
 * Writes the accepted records gathered so far in one INSERT, one transaction. One is in flight
 * at a time, and what arrives meanwhile makes the next: under load each commit carries many
 * records (a commit per request held the gateway to PostgreSQL's commit rate).
 */
static void accept_flush(gateway *g)
{
    static const char sql[] =
        "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, aggregate_id, "
        "status) SELECT id, tenant, idempotency_key, type, aggregate_type, aggregate_id, "
        "'accepted' FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, tenant text, "
        "idempotency_key text, type text, aggregate_type text, aggregate_id text) "
        "ON CONFLICT DO NOTHING";
    if (g->accept_inflight || g->naccepting == 0)
        return;
    accept_batch *b = xcalloc(1, sizeof(*b));
    b->g = g;
    b->items = g->accepting;
    b->n = g->naccepting;
    g->accepting = NULL;
    g->naccepting = g->accepting_cap = 0;
    json_t *rows = json_array();
    for (size_t i = 0; i < b->n; i++) {
        const pending *p = b->items[i];
        json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                                              p->in.command_id, "tenant", p->tenant,
                                              "idempotency_key", p->in.idempotency_key, "type",
                                              domain_command_type(p->in.cmd), "aggregate_type",
                                              domain_command_aggregate(p->in.cmd), "aggregate_id",
                                              p->in.aggregate_id));
    }
    char *param = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    const char *v[] = {param};
    if (param && pgconn_query_prepared(g->pg, sql, 1, v, on_recorded, b) == 0)
        g->accept_inflight = true;
    else /* not recorded: answered all the same, the command is in Kafka */
        accept_batch_done(b);
    free(param);
}

static void on_accept_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    accept_flush(arg);
}

/*
 * Records the command as accepted before answering 202, so that its Location answers at once
 * instead of 404 until the processor gets to it (a claimed key is recorded already). The
 * processor's own record replaces this one; if the processor was first, nothing is written. A
 * database that cannot take the record does not turn the 202 into an error: the command is in
 * Kafka either way. The records of a loop pass (and of the time the last INSERT took) go
 * together: see accept_flush().
 */
static void answer_accepted(pending *p)
{
    gateway *g = p->g;
    if (p->deadline)
        event_del(p->deadline);
    if (p->claimed) {
        send_accepted(p);
        return;
    }
    if (g->naccepting == g->accepting_cap) {
        g->accepting_cap = g->accepting_cap ? 2 * g->accepting_cap : 64;
        g->accepting = xrealloc(g->accepting, g->accepting_cap * sizeof(*g->accepting));
    }
    g->accepting[g->naccepting++] = p;
    p->in_query = true;
    if (!g->accept_flush_ev)
        g->accept_flush_ev = event_new(g->base, -1, 0, on_accept_flush, g);
    if (g->naccepting == 1 && !g->accept_inflight)
        event_active(g->accept_flush_ev, 0, 0); /* after this pass's other answers */
}

void commands_flush_accepted(gateway *g)
{
    accept_flush(g);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pending *p = arg;
    if (!p->req || (p->in_query && p->delivered))
        return;
    /* A wait shorter than sync.timeout_ms (Prefer: wait=0, say) ends the wait for the result,
       not for Kafka's confirmation, without which no 2xx can be given: that gets
       sync.timeout_ms from arrival, and the answer is 202 as soon as it comes. */
    long long left_us = p->g->cfg->sync_timeout_ms * 1000 - (ids_monotonic_us() - p->arrived_us);
    if (!p->delivered && !p->wait_over && left_us > 0) {
        p->wait_over = true;
        struct timeval tv = {.tv_sec = left_us / 1000000, .tv_usec = (long)(left_us % 1000000)};
        evtimer_add(p->deadline, &tv);
        return;
    }
    if (!p->delivered) {
        /* Kafka has not confirmed (or the key could not be claimed yet): the client must not
           take it as accepted. A retry with the same Idempotency-Key is safe either way. */
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                      "the command was not confirmed in time; retry with the "
                                      "same Idempotency-Key",
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

/* Publishes the command to Kafka, keyed by aggregate id. */
static void produce(pending *p)
{
    gateway *g = p->g;
    int reply_partition = -1;
    /* One waiter per command id: a takeover of a stale claim republishes an id that an earlier
       request here may still wait for; the later one is answered 202 once Kafka has it. */
    if (!p->in.respond_async && g->nowned > 0 && !strmap_get(g->parked, p->in.command_id))
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
        .tenant = p->tenant,
        .idempotency_key = p->in.idempotency_key,
        .traceparent = p->traceparent,
        .tracestate = p->in.tracestate,
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
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                      r == KAFKA_QUEUE_FULL ? "the Kafka producer queue is full"
                                                            : "Kafka refused the command",
                                      NULL));
        return;
    }
    p->dr_pending = true;
    p->produced_us = ids_monotonic_us();
    if (p->wants_reply) {
        strmap_put(g->parked, p->in.command_id, p);
        metrics_gauge_add(g->m_parked, 1);
        p->parked = true;
    }
}

/*
 * The outcome of claiming a client's Idempotency-Key (IETF httpapi idempotency-key draft):
 * claimed -> publish; the key's command still in flight -> 409; the key used for another
 * request -> 422; finished -> the stored answer again. A claim older than
 * idempotency.inflight_timeout_s whose command never reached Kafka (the gateway died between
 * claim and publish) is taken over: the same command id is published again, which the processor
 * applies at most once.
 */
static void on_claimed(const pgconn_result *r, void *arg)
{
    pending *p = arg;
    p->in_query = false;
    if (!p->req) {
        pending_maybe_free(p);
        return;
    }
    if (pgconn_result_status(r) != PGCONN_OK) {
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                      "the Idempotency-Key cannot be checked: PostgreSQL is "
                                      "not available",
                                      NULL));
        return;
    }
    if (pgconn_result_ntuples(r) == 0) { /* another replica claimed it this very moment */
        answer_problem(p, problem_new(PROBLEM_IN_FLIGHT, NULL, NULL));
        return;
    }
    if (strcmp(pgconn_result_value(r, 0, 0), "t") == 0) {
        p->claimed = p->claim_made = true;
        produce(p);
        return;
    }
    /* claimed, id, status, request_hash, http_status, result, age in seconds */
    const char *id = pgconn_result_value(r, 0, 1);
    const char *status = pgconn_result_value(r, 0, 2);
    const char *hash = pgconn_result_value(r, 0, 3);
    bool same = !hash || strcmp(hash, p->fingerprint) == 0;
    /* A claim the processor marked abandoned (accepted for idempotency.abandon_after_s) is still
       undecided: taken over like a stale one, never answered as a result (ADR 0020). */
    bool undecided = strcmp(status, "accepted") == 0 || strcmp(status, "abandoned") == 0;
    if (undecided && atof(pgconn_result_value(r, 0, 6)) < (double)p->g->cfg->inflight_timeout_s) {
        json_t *pb = problem_new(PROBLEM_IN_FLIGHT, NULL, NULL);
        json_object_set_new(pb, "command_id", json_string(id));
        answer_problem(p, pb);
    } else if (!same) {
        json_t *pb = problem_new(PROBLEM_KEY_REUSED,
                                 "this Idempotency-Key was used for a different request", NULL);
        json_object_set_new(pb, "command_id", json_string(id));
        answer_problem(p, pb);
    } else if (undecided) {
        log_kv(LOG_WARN, "taking over a stale claim",
               LOG_FIELDS("command_id", id, "trace_id", p->trace_id));
        snprintf(p->in.command_id, sizeof(p->in.command_id), "%s", id);
        p->claimed = true;
        produce(p);
    } else {
        const char *hs = pgconn_result_value(r, 0, 4);
        const char *result = pgconn_result_value(r, 0, 5);
        json_t *body = result ? json_loads(result, 0, NULL) : NULL;
        if (!hs || !json_is_object(body)) {
            json_decref(body);
            answer_problem(p, problem_new(PROBLEM_INTERNAL, "stored result unreadable", NULL));
            return;
        }
        metrics_add(p->g->m_replayed, 1);
        send_result(p, atoi(hs), body, true);
    }
}

/* Claims the client's key: inserts it as accepted unless it exists, else returns its record. */
static void claim(pending *p)
{
    static const char sql[] =
        "WITH ins AS (INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, "
        "aggregate_id, request_hash, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'accepted') "
        "ON CONFLICT DO NOTHING RETURNING id) "
        "SELECT true, NULL::uuid, NULL, NULL, NULL::int, NULL::jsonb, NULL::float8 FROM ins "
        "UNION ALL "
        "SELECT false, c.id, c.status, c.request_hash, c.http_status, c.result, "
        "extract(epoch FROM now() - c.created_at)::float8 FROM commands c "
        "WHERE c.tenant = $2 AND c.idempotency_key = $3 AND NOT EXISTS (SELECT 1 FROM ins)";
    const char *v[] = {p->in.command_id,
                       p->tenant,
                       p->in.idempotency_key,
                       domain_command_type(p->in.cmd),
                       domain_command_aggregate(p->in.cmd),
                       p->in.aggregate_id,
                       p->fingerprint};
    if (pgconn_query_prepared(p->g->pg, sql, 7, v, on_claimed, p) == 0) {
        p->in_query = true;
        return;
    }
    answer_problem(p, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is busy", NULL));
}

void commands_post(gateway *g, http_req *req, const char *tenant)
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
    snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
    size_t len;
    const char *body = http_req_body(req, &len);
    intake_headers h = {
        .idempotency_key = http_req_header(req, "Idempotency-Key"),
        .if_match = http_req_header(req, "If-Match"),
        .prefer = http_req_header(req, "Prefer"),
        .traceparent = http_req_header(req, "traceparent"),
        .tracestate = http_req_header(req, "tracestate"),
    };
    json_t *problem = intake_parse(&p->in, g->domains, body, len, &h);
    if (problem) {
        free(p);
        gateway_problem(g, req, problem);
        return;
    }
    p->req = req;
    g->live++;
    http_req_on_gone(req, on_gone, p);
    trace_child(p->in.traceparent, p->traceparent);
    trace_id_of(p->traceparent, p->trace_id);
    if (log_enabled(LOG_DEBUG))
        log_kv(LOG_DEBUG, "command received",
               LOG_FIELDS("command_id", p->in.command_id, "type", domain_command_type(p->in.cmd),
                          "aggregate_id", p->in.aggregate_id, "tenant", p->tenant, "trace_id",
                          p->trace_id));
    /* From arrival: bounds the key check and Kafka's confirmation too, so nothing hangs. */
    p->arrived_us = ids_monotonic_us();
    long long ms = wait_ms(g, &p->in);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
    p->deadline = evtimer_new(g->base, on_deadline, p);
    evtimer_add(p->deadline, &tv);
    if (p->in.key_assigned) {
        produce(p); /* a fresh key: nothing to check */
    } else {
        intake_fingerprint(&p->in, p->fingerprint);
        claim(p);
    }
}

static void on_released(const pgconn_result *r, void *arg)
{
    pending *p = arg;
    p->in_query = false;
    if (pgconn_result_status(r) != PGCONN_OK)
        log_kv(LOG_WARN, "Idempotency-Key not released",
               LOG_FIELDS("command_id", p->in.command_id, "error", pgconn_result_error(r)));
    if (!p->req) {
        pending_maybe_free(p);
        return;
    }
    answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                  "Kafka did not take the command; retry with the same "
                                  "Idempotency-Key",
                                  NULL));
}

/*
 * Kafka did not take the command. When it cannot have written it, the key this request claimed
 * is released, so that the client's retry with the same key is not answered 409 until the claim
 * goes stale; the request, if still waiting, is answered once that is done. When the broker may
 * have written it, the claim stays: the command may yet be applied, and a retry must not make a
 * second command of the same key (it gets 409, then takes over the stale claim, ADR 0006).
 */
static void undelivered(pending *p, const kafka_delivery *d)
{
    log_kv(LOG_WARN, "command not delivered",
           LOG_FIELDS("command_id", p->in.command_id, "trace_id", p->trace_id, "error", d->errstr,
                      "possibly_written", d->maybe_persisted ? "true" : "false", "answered",
                      p->req ? "false" : "true"));
    if (p->claim_made && !d->maybe_persisted) {
        static const char sql[] =
            "DELETE FROM commands WHERE id = $1 AND tenant = $2 AND status = 'accepted'";
        const char *v[] = {p->in.command_id, p->tenant};
        if (pgconn_query_prepared(p->g->pg, sql, 2, v, on_released, p) == 0) {
            p->in_query = true;
            return;
        }
        log_kv(LOG_WARN, "Idempotency-Key not released",
               LOG_FIELDS("command_id", p->in.command_id, "error", "PostgreSQL is busy"));
    }
    if (p->req)
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE, d->errstr, NULL));
    else
        pending_maybe_free(p);
}

void commands_on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    gateway *g = arg;
    pending *p = opaque;
    p->dr_pending = false;
    p->delivered = !d->err;
    metrics_add(d->err ? g->m_produce_failed : g->m_produced, 1);
    if (d->err) {
        undelivered(p, d);
        return;
    }
    metrics_observe_us(g->m_kafka_ack, ids_monotonic_us() - p->produced_us);
    if (!p->req) /* answered from its reply already, timed out, or the client left */
        pending_maybe_free(p);
    else if (!p->wants_reply || g->stopping || p->wait_over)
        answer_accepted(p); /* shutting down, or the wait is over: no reply will be awaited */
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
    send_result(p, status, json_deep_copy(body), json_is_true(json_object_get(reply, "replayed")));
}

void commands_on_replies(void *arg)
{
    gateway *g = arg;
    kafka_message msgs[256];
    size_t n;
    while ((n = kafka_consumer_poll(g->replies, msgs, 256)) > 0) {
        long long now_us = ids_now_us(), mono_us = ids_monotonic_us();
        for (size_t i = 0; i < n; i++) {
            if (msgs[i].timestamp_ms >= 0)
                metrics_observe_us(g->m_reply_transit, now_us - msgs[i].timestamp_ms * 1000);
            json_t *reply = json_loadb(msgs[i].value, msgs[i].len, 0, NULL);
            const char *id = json_string_value(json_object_get(reply, "command_id"));
            pending *p = id ? strmap_get(g->parked, id) : NULL;
            if (p && p->req) {
                metrics_add(g->m_replies, 1);
                metrics_observe_us(g->m_reply_wait, mono_us - p->produced_us);
                answer_reply(p, reply);
            } else {
                metrics_add(g->m_replies_unmatched, 1);
            }
            json_decref(reply);
        }
    }
}

/* The worker can route replies once it owns a partition: the process is ready when all can. */
static void owned_changed(gateway *g, bool had)
{
    if (!had && g->nowned > 0)
        atomic_fetch_add(&g->shared->workers_ready, 1);
    else if (had && g->nowned == 0)
        atomic_fetch_sub(&g->shared->workers_ready, 1);
    char count[24];
    snprintf(count, sizeof(count), "%zu", g->nowned);
    log_kv(LOG_INFO, "reply partitions owned", LOG_FIELDS("count", count));
}

/*
 * Assigned reply partitions start at their end (auto.offset.reset=latest), which the consumer
 * resolves some time after the assignment: a reply written before then would be skipped. So a
 * partition is named in commands only once the consumer reports reaching its end.
 */
bool commands_on_assign(const int *partitions, size_t n, bool assigned, void *arg)
{
    gateway *g = arg;
    bool had = g->nowned > 0;
    if (assigned) {
        g->warming = xrealloc(g->warming, (g->nwarming + n) * sizeof(int));
        memcpy(g->warming + g->nwarming, partitions, n * sizeof(int));
        g->nwarming += n;
    } else {
        g->nwarming = kafka_partitions_remove(g->warming, g->nwarming, partitions, n);
        g->nowned = kafka_partitions_remove(g->owned, g->nowned, partitions, n);
        owned_changed(g, had);
    }
    return false;
}

void commands_on_replies_eof(int partition, void *arg)
{
    gateway *g = arg;
    size_t before = g->nwarming;
    g->nwarming = kafka_partitions_remove(g->warming, g->nwarming, &partition, 1);
    if (g->nwarming == before)
        return; /* already routable */
    bool had = g->nowned > 0;
    g->owned = xrealloc(g->owned, (g->nowned + 1) * sizeof(int));
    g->owned[g->nowned++] = partition;
    owned_changed(g, had);
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
        if (all[i]->req && all[i]->delivered)
            send_accepted(all[i]); /* shutting down: no time to record them */
    }
    free(all);
}
