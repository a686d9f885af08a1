/*
 * commands.c: the write path. A command is validated, produced to Kafka keyed by aggregate id and,
 * in sync mode, parked until its reply arrives on a replies partition this replica owns.
 */
#include "gateway.h"

#include "http/etag.h"
#include "core/ids.h"
#include "intake.h"
#include "core/log.h"
#include "http/problem.h"
#include "core/trace.h"
#include "core/xalloc.h"

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
    char fingerprint[IDS_UUID_LEN]; /* of the request, stored with its key (assigned ones too) */
    char *value;                    /* the payload as published, until it is */
    struct event *deadline;
    long long produced_us;      /* monotonic, when it was handed to the producer */
    bool claimed;               /* the client's key is recorded as ours (status accepted) */
    bool claim_made;            /* ... by this request's INSERT, not taken over from another */
    bool dr_pending;            /* a Kafka delivery report is due */
    bool delivered;             /* Kafka confirmed the command */
    bool in_query;              /* a PostgreSQL query holds a reference */
    bool claiming;              /* ... the claim of the key: queued or running */
    bool recording;             /* ... the accepted record, with the fingerprint */
    bool accept_due;            /* 202 is the answer once the record is written */
    json_t *reply;              /* the reply, when it came while the record was written */
    int release_tries;          /* DELETEs of the claim sent (a lost connection gets another) */
    problem_kind release_kind;  /* once the claim is released: the answer to a waiting request */
    const char *release_detail; /* ... its detail (static); NULL: the request is answered already */
    bool wants_reply;           /* sync with a reply partition: answer from the reply */
    bool parked;                /* present in g->parked */
    bool wait_over;       /* the client's wait ended before Kafka confirmed: 202 once it does */
    long long arrived_us; /* monotonic */
    /* Held: a sync request that came before the process could route replies (see hold()). */
    struct event *hold;
    struct pending *held_prev, *held_next; /* in g->held */
    bool held;
} pending;

static void on_claimed(const pgconn_result *r, void *arg);
static void answer_reply(pending *p, json_t *reply);

static void pending_free(pending *p)
{
    if (p->deadline)
        event_free(p->deadline);
    if (p->hold)
        event_free(p->hold);
    intake_clear(&p->in);
    free(p->value);
    json_decref(p->reply);
    free(p);
}

/* Freed once answered (or gone) and no longer referred to by Kafka or PostgreSQL. */
static void pending_maybe_free(pending *p)
{
    if (!p->req && !p->dr_pending && !p->in_query)
        pending_free(p);
}

static void unhold(pending *p);

/* The request got its answer (or its client left): drop every reference to it. */
static void pending_done(pending *p)
{
    if (p->req) {
        p->g->live--;
        metrics_gauge_add(p->g->m_unanswered, -1);
    }
    p->req = NULL;
    /* A claim still queued (PostgreSQL down) must not run for a request no longer there: it
       would hold the key for idempotency.inflight_timeout_s with nothing published. One that
       has been sent is released when its answer comes (on_claimed). */
    if (p->claiming && pgconn_cancel(p->g->pg, on_claimed, p))
        p->claiming = p->in_query = false;
    unhold(p);
    if (p->parked) {
        replies_forget(p->g->shared->replies, p->g->inbox, p->in.command_id);
        strmap_remove(p->g->parked, p->in.command_id);
        metrics_gauge_add(p->g->m_parked, -1);
        p->parked = false;
    }
    if (p->deadline)
        event_del(p->deadline);
    pending_maybe_free(p);
}

/*
 * Headers of every answer to a validated command: the key, as the RFC 8941 sf-string the
 * Idempotency-Key field is; Vary: Prefer, since respond-async and wait=N change the answer.
 */
static void set_common_headers(pending *p)
{
    char *key = intake_key_sf_string(p->in.idempotency_key);
    http_req_set_header(p->req, "Idempotency-Key", key);
    free(key);
    http_req_set_header(p->req, "Vary", "Prefer");
}

/*
 * Preference-Applied (RFC 7240): respond-async on the 202 it asked for; wait=N when the request
 * waited for its result as long as it asked (N within sync.max_wait_ms).
 */
static void set_preference_applied(pending *p)
{
    if (p->in.respond_async) {
        http_req_set_header(p->req, "Preference-Applied", "respond-async");
    } else if (p->in.wait_ms >= 0 && p->in.wait_ms <= p->g->cfg->sync_max_wait_ms) {
        char applied[32];
        snprintf(applied, sizeof(applied), "wait=%lld", p->in.wait_ms / 1000);
        http_req_set_header(p->req, "Preference-Applied", applied);
    }
}

static void answer_problem(pending *p, json_t *problem)
{
    set_common_headers(p);
    /* The command's id names something only once it was handed to Kafka: before that, a client
       following it would find nothing (its key's command, if any, has another id). */
    if (!json_object_get(problem, "command_id") && p->produced_us)
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
    set_preference_applied(p);
    http_req_set_header(p->req, "Location", location);
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
    if (!p->in.respond_async) /* a replayed answer to respond-async is not the 202 it asked */
        set_preference_applied(p);
    if (replayed)
        http_req_set_header(p->req, "Idempotent-Replayed", "true");
    json_t *version = json_object_get(body, "version");
    if (status < 300 && json_is_integer(version)) {
        char etag[ETAG_VERSION_LEN];
        etag_of_version((long long)json_integer_value(version), etag);
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

/*
 * The batch's records are written (or could not be): each request whose answer waited for its
 * record gets it, a reply that came meanwhile or 202; the others go on waiting for their reply.
 * Frees the batch.
 */
static void accept_batch_done(accept_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        pending *p = b->items[i];
        p->in_query = p->recording = false;
        if (!p->req)
            pending_maybe_free(p);
        else if (p->reply)
            answer_reply(p, p->reply);
        else if (p->accept_due || p->g->stopping)
            send_accepted(p);
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
 * records (a commit per request held the gateway to PostgreSQL's commit rate). The processor
 * may have written its record of a command first: then only the fingerprint is added to it. A
 * row that holds the key under another id (a client that used this very UUID as its own key)
 * is left alone rather than failing the batch.
 */
static void accept_flush(gateway *g)
{
    static const char sql[] =
        "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, aggregate_id, "
        "request_hash, status) SELECT x.id, x.tenant, x.idempotency_key, x.type, "
        "x.aggregate_type, x.aggregate_id, x.request_hash, 'accepted' "
        "FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, tenant text, idempotency_key text, "
        "type text, aggregate_type text, aggregate_id text, request_hash text) "
        "WHERE NOT EXISTS (SELECT 1 FROM commands c WHERE c.tenant = x.tenant AND "
        "c.idempotency_key = x.idempotency_key AND c.id <> x.id) "
        "ORDER BY x.id " /* rows locked in id order, as the processor's writes lock them */
        "ON CONFLICT (id) DO UPDATE SET request_hash = EXCLUDED.request_hash "
        "WHERE commands.request_hash IS NULL";
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
        json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                                              p->in.command_id, "tenant", p->tenant,
                                              "idempotency_key", p->in.idempotency_key, "type",
                                              domain_command_type(p->in.cmd), "aggregate_type",
                                              domain_command_aggregate(p->in.cmd), "aggregate_id",
                                              p->in.aggregate_id, "request_hash", p->fingerprint));
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
 * Records a command Kafka has confirmed whose key the gateway made up (a client's key is
 * recorded by its claim): accepted, with the request's fingerprint. So a 202's Location answers
 * at once instead of 404 until the processor gets to it, and a client that echoes the key with
 * another body gets 422, not the first answer. The answer to the request waits for the record
 * (see accept_batch_done()); the processor's own record updates this one. A database that
 * cannot take the record does not turn the answer into an error: the command is in Kafka
 * either way. The records of a loop pass (and of the time the last INSERT took) go together:
 * see accept_flush().
 */
static void record(pending *p)
{
    gateway *g = p->g;
    if (g->naccepting == g->accepting_cap) {
        g->accepting_cap = g->accepting_cap ? 2 * g->accepting_cap : 64;
        g->accepting = xrealloc(g->accepting, g->accepting_cap * sizeof(*g->accepting));
    }
    g->accepting[g->naccepting++] = p;
    p->in_query = p->recording = true;
    if (!g->accept_flush_ev)
        g->accept_flush_ev = event_new(g->base, -1, 0, on_accept_flush, g);
    if (g->naccepting == 1 && !g->accept_inflight)
        event_active(g->accept_flush_ev, 0, 0); /* after this pass's other answers */
}

/*
 * 202: once the command's record is written, or at once while PostgreSQL is down: the command
 * is in Kafka, and an unkeyed write does not wait for PostgreSQL.
 */
static void answer_accepted(pending *p)
{
    if (p->deadline)
        event_del(p->deadline);
    if (p->recording && pgconn_connected(p->g->pg))
        p->accept_due = true;
    else
        send_accepted(p);
}

void commands_flush_accepted(gateway *g)
{
    accept_flush(g);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pending *p = arg;
    if (!p->req || p->accept_due)
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
    if (p->claiming) {
        /* The key is not claimed yet: a claim still queued goes with the request
           (pending_done), one already running is released when it ends (on_claimed). */
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                      pgconn_connected(p->g->pg)
                                          ? "the Idempotency-Key could not be checked in time; "
                                            "retry with the same Idempotency-Key"
                                          : "the Idempotency-Key cannot be checked: PostgreSQL "
                                            "is not available; retry with the same "
                                            "Idempotency-Key",
                                      NULL));
        return;
    }
    if (!p->delivered) {
        /* Kafka has not confirmed: the client must not take it as accepted. A retry with the
           same Idempotency-Key is safe either way. */
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

static bool release_claim(pending *p);

/* The claim's DELETE is done (or could not be sent): the waiting request gets its answer. */
static void released(pending *p)
{
    if (!p->req)
        pending_maybe_free(p);
    else if (p->release_detail)
        answer_problem(p, problem_new(p->release_kind, p->release_detail, NULL));
    /* else the caller answers */
}

static void on_released(const pgconn_result *r, void *arg)
{
    pending *p = arg;
    p->in_query = false;
    pgconn_status st = pgconn_result_status(r);
    /* The connection dropped before the answer: send it again, to the next connection. */
    if (st == PGCONN_DISCONNECTED && p->release_tries < 3 && release_claim(p))
        return;
    if (st != PGCONN_OK)
        log_kv(LOG_WARN, "Idempotency-Key not released",
               LOG_FIELDS("command_id", p->in.command_id, "trace_id", p->trace_id, "error",
                          pgconn_result_error(r)));
    released(p);
}

/*
 * Deletes the claim this request's INSERT made (or may have made: a connection lost before its
 * answer), so that the key is free at once rather than answering 409 until
 * idempotency.inflight_timeout_s. Called only for a command that is not in Kafka (never
 * produced, or never written), and guarded so that it deletes nothing else: the row of this
 * request's command id only, while it is still accepted and younger than inflight_timeout_s (a
 * claim that old may have been taken over by a retry that published it). Once done, a request
 * still waiting is answered with release_kind and release_detail, or, when release_detail is
 * NULL, by the caller right after this call. Returns false, having logged why, when the DELETE
 * could not be queued: the caller then answers or lets go of p itself.
 */
static bool release_claim(pending *p)
{
    static const char sql[] =
        "DELETE FROM commands WHERE id = $1 AND tenant = $2 AND status = 'accepted' AND "
        "created_at > now() - make_interval(secs => $3)";
    char secs[24];
    snprintf(secs, sizeof(secs), "%lld", p->g->cfg->inflight_timeout_s);
    const char *v[] = {p->in.command_id, p->tenant, secs};
    p->release_tries++;
    if (pgconn_query_prepared(p->g->pg, sql, 3, v, on_released, p) == 0) {
        p->in_query = true;
        return true;
    }
    log_kv(LOG_WARN, "Idempotency-Key not released",
           LOG_FIELDS("command_id", p->in.command_id, "error", "PostgreSQL is busy"));
    return false;
}

/* Publishes the command to Kafka, keyed by aggregate id. */
static void produce(pending *p)
{
    gateway *g = p->g;
    int reply_partition = -1;
    /* One waiter per command id: a takeover of a stale claim republishes an id that an earlier
       request of the process may still wait for; the later one is answered 202 once Kafka has
       it. Registered before the command leaves: its reply may come at once. */
    if (!p->in.respond_async)
        reply_partition = replies_expect(g->shared->replies, g->inbox, p->in.command_id);
    p->wants_reply = reply_partition >= 0;
    if (p->wants_reply) {
        strmap_put(g->parked, p->in.command_id, p);
        metrics_gauge_add(g->m_parked, 1);
        p->parked = true;
    }

    char now[IDS_TIME_LEN];
    ids_now_rfc3339(now);
    envelope e = {
        .id = p->in.command_id,
        .source = SIZELIMITS_COMMAND_SOURCE,
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
    kafka_send_result r =
        kafka_produce(g->producer, g->topic_commands, -1, p->in.aggregate_id,
                      strlen(p->in.aggregate_id), p->value, strlen(p->value), hdrs, nh, p);
    free(p->value); /* copied by the producer */
    p->value = NULL;
    if (r != KAFKA_OK) {
        metrics_add(g->m_produce_failed, 1);
        const char *detail = r == KAFKA_QUEUE_FULL ? "the Kafka producer queue is full"
                                                   : "Kafka refused the command";
        log_kv(
            LOG_WARN, "command not produced",
            LOG_FIELDS("command_id", p->in.command_id, "trace_id", p->trace_id, "error", detail));
        /* Never in Kafka: the key is free again, then the answer. */
        p->release_kind = PROBLEM_UNAVAILABLE;
        p->release_detail = detail;
        if (!p->claim_made || !release_claim(p))
            answer_problem(p, problem_new(PROBLEM_UNAVAILABLE, detail, NULL));
        return;
    }
    p->dr_pending = true;
    p->produced_us = ids_monotonic_us();
}

/*
 * 409: the key's command is in flight. Retry-After: 1, as it is normally decided within a
 * second; a claim whose command never reached Kafka (its gateway died) frees itself after
 * idempotency.inflight_timeout_s, so retrying every second finds the key free soon after.
 */
static void answer_in_flight(pending *p, const char *command_id)
{
    json_t *pb = problem_new(PROBLEM_IN_FLIGHT, NULL, NULL);
    if (command_id)
        json_object_set_new(pb, "command_id", json_string(command_id));
    http_req_set_header(p->req, "Retry-After", "1");
    answer_problem(p, pb);
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
    p->in_query = p->claiming = false;
    pgconn_status st = pgconn_result_status(r);
    bool made = st == PGCONN_OK && pgconn_result_ntuples(r) > 0 &&
                strcmp(pgconn_result_value(r, 0, 0), "t") == 0;
    /* The connection dropped before the answer came: the INSERT may have committed anyway. */
    bool maybe_made = st == PGCONN_DISCONNECTED;
    if (!p->req) {
        /* Answered 503 at its deadline, or its client left: the key must not stay claimed for
           a command that will never be published. */
        p->release_detail = NULL;
        if (!(made || maybe_made) || !release_claim(p))
            pending_maybe_free(p);
        return;
    }
    if (st != PGCONN_OK) {
        p->release_detail = NULL;
        if (maybe_made) /* answered just below; the DELETE waits for PostgreSQL */
            (void)release_claim(p);
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                      "the Idempotency-Key cannot be checked: PostgreSQL is "
                                      "not available; retry with the same Idempotency-Key",
                                      NULL));
        return;
    }
    if (pgconn_result_ntuples(r) == 0) { /* another replica claimed it this very moment */
        answer_in_flight(p, NULL);
        return;
    }
    if (made) {
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
        answer_in_flight(p, id);
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
        p->in_query = p->claiming = true;
        return;
    }
    answer_problem(p, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is busy", NULL));
}

/* Arms the request's deadline ms from now, then claims its key or publishes it. */
static void begin(pending *p, long long ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
    evtimer_add(p->deadline, &tv);
    intake_fingerprint(&p->in, p->fingerprint);
    if (p->in.key_assigned)
        produce(p); /* a fresh key: nothing to check; its record keeps the fingerprint */
    else
        claim(p);
}

static void unhold(pending *p)
{
    if (!p->held)
        return;
    gateway *g = p->g;
    event_del(p->hold);
    if (p->held_prev)
        p->held_prev->held_next = p->held_next;
    else
        g->held = p->held_next;
    if (p->held_next)
        p->held_next->held_prev = p->held_prev;
    p->held_prev = p->held_next = NULL;
    p->held = false;
    g->nheld--;
}

/*
 * The request's wait ended before the process could route replies: it goes on as an async one
 * would, answered 202 once Kafka has the command; Kafka's confirmation gets sync.timeout_ms
 * from now, as it would from arrival.
 */
static void on_hold_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pending *p = arg;
    unhold(p);
    p->wait_over = true;
    p->arrived_us = ids_monotonic_us();
    begin(p, p->g->cfg->sync_timeout_ms);
}

/*
 * A sync request that comes while the process owns no routable reply partition (start-up, a
 * rebalance) is held, nothing claimed or published, until the process can route its reply or
 * its wait of ms is over (on_hold_over()): answered at once, it could only get 202.
 */
static void hold(pending *p, long long ms)
{
    gateway *g = p->g;
    if (!p->hold)
        p->hold = evtimer_new(g->base, on_hold_over, p);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
    evtimer_add(p->hold, &tv);
    p->held_next = g->held;
    if (g->held)
        g->held->held_prev = p;
    g->held = p;
    p->held = true;
    g->nheld++;
}

void commands_on_routable(void *arg)
{
    gateway *g = arg;
    pending *p = g->held;
    while (p && p->held_next) /* oldest first */
        p = p->held_next;
    long long now_us = ids_monotonic_us();
    while (p) {
        pending *newer = p->held_prev;
        unhold(p);
        long long left_ms = wait_ms(g, &p->in) - (now_us - p->arrived_us) / 1000;
        begin(p, left_ms > 0 ? left_ms : 0);
        p = newer;
    }
}

void commands_post(gateway *g, http_req *req, const char *tenant)
{
    if (g->stopping) {
        gateway_problem(g, req, problem_new(PROBLEM_UNAVAILABLE, "shutting down", NULL));
        return;
    }
    if (strmap_size(g->parked) + g->nheld >= (size_t)g->cfg->max_parked) {
        gateway_problem(g, req,
                        problem_new(PROBLEM_UNAVAILABLE, "too many waiting requests", NULL));
        return;
    }
    pending *p = xcalloc(1, sizeof(*p));
    p->g = g;
    snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
    size_t len;
    const char *body = http_req_body(req, &len);
    if (len > g->limits.max_body) { /* within COMMANDS_BODY_GRACE of it: evhttp read it */
        free(p);
        char detail[160];
        snprintf(detail, sizeof(detail),
                 "the body is %zu bytes; the most this gateway takes is %zu", len,
                 g->limits.max_body);
        gateway_problem(g, req, problem_new(PROBLEM_TOO_LARGE, detail, NULL));
        return;
    }
    intake_headers h = {
        .idempotency_key = http_req_header(req, "Idempotency-Key"),
        .if_match = http_req_header(req, "If-Match"),
        .prefer = http_req_header(req, "Prefer"),
        .traceparent = http_req_header(req, "traceparent"),
        .tracestate = http_req_header(req, "tracestate"),
    };
    json_t *problem = intake_parse(&p->in, g->domains, body, len, &h);
    if (!problem) {
        /* Numbers may take more room in Kafka than in the body (0.1 is published as
           0.10000000000000001): what does not fit in a message is refused before any claim. */
        p->value = json_dumps(p->in.payload, JSON_COMPACT);
        size_t size = strlen(p->value) + g->limits.envelope;
        if (size > g->limits.max_message) {
            char detail[200];
            snprintf(detail, sizeof(detail),
                     "the command takes up to %zu bytes in Kafka; the most a message may take is "
                     "%zu",
                     size, g->limits.max_message);
            problem = problem_new(PROBLEM_TOO_LARGE, detail, NULL);
            intake_clear(&p->in);
            free(p->value);
        }
    }
    if (problem) {
        free(p);
        gateway_problem(g, req, problem);
        return;
    }
    p->req = req;
    g->live++;
    metrics_gauge_add(g->m_unanswered, 1);
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
    p->deadline = evtimer_new(g->base, on_deadline, p);
    if (!p->in.respond_async && ms > 0 && !replies_ready(g->shared->replies))
        hold(p, ms);
    else
        begin(p, ms);
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
    /* Larger than the broker or the topic takes (its message.max.bytes below ours): retrying
       cannot help. */
    problem_kind kind = d->too_large ? PROBLEM_TOO_LARGE : PROBLEM_UNAVAILABLE;
    if (p->claim_made && !d->maybe_persisted) {
        p->release_kind = kind;
        p->release_detail = d->too_large ? "the command is larger than the Kafka brokers take"
                                         : "Kafka did not take the command; retry with the same "
                                           "Idempotency-Key";
        if (release_claim(p))
            return;
    }
    if (p->req)
        answer_problem(p, problem_new(kind, d->errstr, NULL));
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
    if (!p->claimed)
        record(p); /* a client's key has its record already: the claim */
    if (!p->req)   /* answered from its reply already, timed out, or the client left */
        pending_maybe_free(p);
    else if (!p->wants_reply || g->stopping || p->wait_over)
        answer_accepted(p); /* shutting down, or the wait is over: no reply will be awaited */
    /* otherwise the request stays parked until its reply or its deadline */
}

/*
 * Answers a parked request from the processor's reply {command_id, http_status, body}; while
 * the command's record is being written, once it is (a retry under the key must find its
 * fingerprint).
 */
static void answer_reply(pending *p, json_t *reply)
{
    if (p->recording && pgconn_connected(p->g->pg)) {
        if (!p->reply)
            p->reply = json_incref(reply);
        return;
    }
    int status = (int)json_integer_value(json_object_get(reply, "http_status"));
    json_t *body = json_object_get(reply, "body");
    if (status < 200 || status > 599 || !json_is_object(body)) {
        answer_problem(p, problem_new(PROBLEM_INTERNAL, "malformed reply", NULL));
        return;
    }
    send_result(p, status, json_deep_copy(body), json_is_true(json_object_get(reply, "replayed")));
}

void commands_on_replies(const replies_msg *msgs, size_t n, void *arg)
{
    gateway *g = arg;
    long long mono_us = ids_monotonic_us();
    for (size_t i = 0; i < n; i++) {
        pending *p = strmap_get(g->parked, msgs[i].command_id);
        if (!p || !p->req) { /* answered at its deadline while the reply was on its way */
            metrics_add(g->m_replies_unmatched, 1);
            continue;
        }
        metrics_add(g->m_replies, 1);
        metrics_observe_us(g->m_reply_wait, mono_us - p->produced_us);
        json_t *reply = json_loadb(msgs[i].value, msgs[i].len, 0, NULL);
        answer_reply(p, reply);
        json_decref(reply);
    }
}

static void collect(const char *key, void *value, void *arg)
{
    (void)key;
    pending ***out = arg;
    *(*out)++ = value;
}

void commands_release_parked(gateway *g)
{
    /* Held requests: nothing claimed or published, the client may retry elsewhere. */
    for (pending *p = g->held, *next; p; p = next) {
        next = p->held_next;
        unhold(p);
        answer_problem(p, problem_new(PROBLEM_UNAVAILABLE, "shutting down", NULL));
    }
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
