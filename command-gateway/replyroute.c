/*
 * replyroute.c: the sync requests of a worker parked for their reply, by command id, and the
 * answer each reply that the process's consumer hands over makes (ADR 0002, ADR 0019).
 */
#include "replyroute.h"

#include "accepted.h"
#include "core/ids.h"
#include "core/xalloc.h"
#include "gateway_int.h"
#include "pending.h"

#include <stdlib.h>

int replyroute_park(pending *p)
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
    return reply_partition;
}

void replyroute_forget(pending *p)
{
    if (p->parked) {
        replies_forget(p->g->shared->replies, p->g->inbox, p->in.command_id);
        strmap_remove(p->g->parked, p->in.command_id);
        metrics_gauge_add(p->g->m_parked, -1);
        p->parked = false;
    }
}

/*
 * Answers a parked request from the processor's reply {command_id, http_status, body}; while
 * the command's record is being written, once it is (a retry under the key must find its
 * fingerprint).
 */
void replyroute_answer(pending *p, json_t *reply)
{
    if (p->recording && pgconn_connected(p->g->pg)) {
        if (!p->reply)
            p->reply = json_incref(reply);
        return;
    }
    int status = (int)json_integer_value(json_object_get(reply, "http_status"));
    json_t *body = json_object_get(reply, "body");
    if (status < 200 || status > 599 || !json_is_object(body)) {
        pending_problem(p, problem_new(PROBLEM_INTERNAL, "malformed reply", NULL));
        return;
    }
    pending_result(p, status, json_deep_copy(body),
                   json_is_true(json_object_get(reply, "replayed")));
}

void replyroute_on_replies(const replies_msg *msgs, size_t n, void *arg)
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
        replyroute_answer(p, reply);
        json_decref(reply);
    }
}

static void collect(const char *key, void *value, void *arg)
{
    (void)key;
    pending ***out = arg;
    *(*out)++ = value;
}

void replyroute_release(gateway *g)
{
    size_t n = strmap_size(g->parked);
    if (n == 0)
        return;
    pending **all = xmalloc(n * sizeof(*all)), **cur = all;
    strmap_each(g->parked, collect, &cur);
    /* Shutting down: no reply will be awaited. Each is answered 202 as any whose wait ended,
       once the record its Location needs is written (ADR 0041: it has none yet). */
    for (size_t i = 0; i < n; i++) {
        if (all[i]->req && all[i]->delivered)
            accepted_answer(all[i]);
    }
    free(all);
}
