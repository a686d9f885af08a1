/*
 * commands.c: the intake of commands. A command is validated, its key claimed, and it is produced
 * to Kafka keyed by aggregate id; in sync mode it is then parked (replyroute.c) until its reply
 * arrives on a replies partition this replica owns.
 */
#include "commands.h"

#include "accepted.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/rfc3339.h"
#include "core/xalloc.h"
#include "gateway_int.h"
#include "intake.h"
#include "pending.h"
#include "replyroute.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

static void on_claimed(const pgconn_result *r, void *arg);
static void unhold(pending *p);

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
        pending_problem(p, problem_new(PROBLEM_UNAVAILABLE,
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
        pending_problem(p, problem_new(PROBLEM_UNAVAILABLE,
                                       "the command was not confirmed in time; retry with the "
                                       "same Idempotency-Key",
                                       NULL));
        return;
    }
    accepted_answer(p);
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
        pending_problem(p, problem_new(p->release_kind, p->release_detail, NULL));
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
    int reply_partition = replyroute_park(p);

    char now[RFC3339_LEN];
    rfc3339_now(now);
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
        .request_hash = p->fingerprint,
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
            pending_problem(p, problem_new(PROBLEM_UNAVAILABLE, detail, NULL));
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
    pending_problem(p, pb);
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
        pending_problem(p, problem_new(PROBLEM_UNAVAILABLE,
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
        pending_problem(p, pb);
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
            pending_problem(p, problem_new(PROBLEM_INTERNAL, "stored result unreadable", NULL));
            return;
        }
        metrics_add(p->g->m_replayed, 1);
        pending_result(p, atoi(hs), body, true);
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
    pending_problem(p, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is busy", NULL));
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

void commands_detach(pending *p)
{
    /* A claim still queued (PostgreSQL down) must not run for a request no longer there: it
       would hold the key for idempotency.inflight_timeout_s with nothing published. One that
       has been sent is released when its answer comes (on_claimed). */
    if (p->claiming && pgconn_cancel(p->g->pg, on_claimed, p))
        p->claiming = p->in_query = false;
    unhold(p);
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
        pending_problem(p, problem_new(kind, d->errstr, NULL));
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
    bool awaits_reply = p->req && p->wants_reply && !g->stopping && !p->wait_over;
    /* A client's key has its record already: the claim. A request that waits for its reply
       gets its answer from the processor's record, which carries the fingerprint too
       (ce_requesthash); it is recorded here only if its wait ends first (accepted_answer()). */
    if (!p->claimed && !awaits_reply)
        accepted_record(p);
    if (!p->req) /* answered from its reply already, timed out, or the client left */
        pending_maybe_free(p);
    else if (!awaits_reply)
        accepted_answer(p); /* shutting down, or the wait is over: no reply will be awaited */
    /* otherwise the request stays parked until its reply or its deadline */
}

void commands_release_parked(gateway *g)
{
    /* Held requests: nothing claimed or published, the client may retry elsewhere. */
    for (pending *p = g->held, *next; p; p = next) {
        next = p->held_next;
        unhold(p);
        pending_problem(p, problem_new(PROBLEM_UNAVAILABLE, "shutting down", NULL));
    }
    replyroute_release(g);
}
