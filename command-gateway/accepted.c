/* accepted.c: the records of accepted commands whose key the gateway made up, in batches. */
#include "accepted.h"

#include "core/jsontext.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "gateway_int.h"
#include "pending.h"
#include "replyroute.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The accepted records of one INSERT. */
typedef struct accept_batch {
    gateway *g;
    pending **items;
    size_t n;
    char *rows;   /* the INSERT's parameter: the records, a JSON array */
    int attempts; /* INSERTs of it sent so far */
} accept_batch;

/* A batch that lost a race on a key (see on_recorded()) is sent again at most this often. */
#define ACCEPT_ATTEMPTS 3

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
            replyroute_answer(p, p->reply);
        else if (p->accept_due || p->g->stopping)
            pending_accepted(p);
    }
    free(b->items);
    free(b->rows);
    free(b);
}

/*
 * The records of a batch, in one INSERT, one transaction. The processor may have written its
 * record of a command first: then only the fingerprint is added to it. A row that holds the key
 * under another id (a client that used this very UUID as its own key) is left alone rather than
 * failing the batch.
 */
static const char record_sql[] =
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

static void on_recorded(const pgconn_result *r, void *arg);

/* Sends the batch's INSERT; false when it could not be queued. */
static bool record_send(accept_batch *b)
{
    const char *v[] = {b->rows};
    if (!b->rows || pgconn_query_prepared(b->g->pg, record_sql, 1, v, on_recorded, b) != 0)
        return false;
    b->attempts++;
    b->g->accept_inflight = true;
    return true;
}

/*
 * A unique violation is a race lost, not a bad record: ON CONFLICT takes one arbiter (the id),
 * and a row the processor inserts for the same command while this INSERT runs can also collide
 * on (tenant, idempotency_key), failing the whole batch. Sent again, the INSERT sees that row
 * committed and takes its DO UPDATE path.
 */
static void on_recorded(const pgconn_result *r, void *arg)
{
    accept_batch *b = arg;
    gateway *g = b->g;
    g->accept_inflight = false;
    if (pgconn_result_status(r) != PGCONN_OK) {
        const char *state = pgconn_result_sqlstate(r);
        if (state && strcmp(state, "23505") == 0 && b->attempts < ACCEPT_ATTEMPTS && !g->stopping &&
            record_send(b))
            return;
        LOG_KV(LOG_WARN, "accepted commands not recorded; their status appears once applied",
               LOG_NUM("count", b->n), LOG_STR("error", pgconn_result_error(r)));
    }
    accept_batch_done(b);
    accepted_flush(g); /* what gathered while this one was written */
}

/*
 * Writes the accepted records gathered so far in one INSERT (record_sql). One is in flight at a
 * time, and what arrives meanwhile makes the next: under load each commit carries many records
 * (a commit per request held the gateway to PostgreSQL's commit rate).
 */
void accepted_flush(gateway *g)
{
    if (g->accept_inflight || g->naccepting == 0)
        return;
    accept_batch *b = xcalloc(1, sizeof(*b));
    b->g = g;
    b->items = g->accepting;
    b->n = g->naccepting;
    g->accepting = NULL;
    g->naccepting = g->accepting_cap = 0;
    /* Written as text (ADR 0031's jsontext): a tree of seven members per record, built, dumped
       and freed, took 6% of the gateway's CPU under load (profile of make bench's intake). */
    jsontext rows = {0};
    JSONTEXT_LIT(&rows, "[");
    for (size_t i = 0; i < b->n; i++) {
        const pending *p = b->items[i];
        if (i)
            JSONTEXT_LIT(&rows, ",");
        JSONTEXT_LIT(&rows, "{\"id\":");
        jsontext_str(&rows, p->in.command_id);
        JSONTEXT_LIT(&rows, ",\"tenant\":");
        jsontext_str(&rows, p->tenant);
        JSONTEXT_LIT(&rows, ",\"idempotency_key\":");
        jsontext_str(&rows, p->in.idempotency_key);
        JSONTEXT_LIT(&rows, ",\"type\":");
        jsontext_str(&rows, domain_command_type(p->in.cmd));
        JSONTEXT_LIT(&rows, ",\"aggregate_type\":");
        jsontext_str(&rows, domain_command_aggregate(p->in.cmd));
        JSONTEXT_LIT(&rows, ",\"aggregate_id\":");
        jsontext_str(&rows, p->in.aggregate_id);
        JSONTEXT_LIT(&rows, ",\"request_hash\":");
        jsontext_str(&rows, p->fingerprint);
        JSONTEXT_LIT(&rows, "}");
    }
    JSONTEXT_LIT(&rows, "]");
    b->rows = jsontext_finish(&rows, NULL);
    if (!record_send(b)) /* not recorded: answered all the same, the command is in Kafka */
        accept_batch_done(b);
}

static void on_accept_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    accepted_flush(arg);
}

/*
 * Records a command Kafka has confirmed whose key the gateway made up (a client's key is
 * recorded by its claim): accepted, with the request's fingerprint. So a 202's Location answers
 * at once instead of 404 until the processor gets to it, and a client that echoes the key with
 * another body gets 422, not the first answer. The answer to the request waits for the record
 * (see accept_batch_done()); the processor's own record updates this one. A database that
 * cannot take the record does not turn the answer into an error: the command is in Kafka
 * either way. The records of a loop pass (and of the time the last INSERT took) go together:
 * see accepted_flush().
 */
void accepted_record(pending *p)
{
    gateway *g = p->g;
    if (g->naccepting == g->accepting_cap) {
        g->accepting_cap = g->accepting_cap ? 2 * g->accepting_cap : 64;
        g->accepting = xrealloc(g->accepting, g->accepting_cap * sizeof(*g->accepting));
    }
    g->accepting[g->naccepting++] = p;
    p->in_query = p->recording = p->recorded = true;
    if (!g->accept_flush_ev)
        g->accept_flush_ev = event_new(g->base, -1, 0, on_accept_flush, g);
    if (g->naccepting == 1 && !g->accept_inflight)
        event_active(g->accept_flush_ev, 0, 0); /* after this pass's other answers */
}

/*
 * 202: once the command's record is written, or at once while PostgreSQL is down: the command
 * is in Kafka, and an unkeyed write does not wait for PostgreSQL. A sync request whose wait
 * ended before its reply came is recorded now (commands_on_delivery() left it to its reply).
 */
void accepted_answer(pending *p)
{
    if (p->deadline)
        event_del(p->deadline);
    if (!p->claimed && !p->recorded)
        accepted_record(p);
    if (p->recording && pgconn_connected(p->g->pg))
        p->accept_due = true;
    else
        pending_accepted(p);
}
