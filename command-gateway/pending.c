/* pending.c: a write request's life and its answers. */
#include "pending.h"

#include "commands.h"
#include "core/xalloc.h"
#include "domain/domain.h"
#include "gateway_int.h"
#include "http/etag.h"
#include "replyroute.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

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

void pending_maybe_free(pending *p)
{
    if (!p->req && !p->dr_pending && !p->in_query)
        pending_free(p);
}

void pending_done(pending *p)
{
    if (p->req) {
        p->g->live--;
        metrics_gauge_add(p->g->m_unanswered, -1);
    }
    p->req = NULL;
    commands_detach(p);
    replyroute_forget(p);
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

void pending_problem(pending *p, json_t *problem)
{
    set_common_headers(p);
    /* The command's id names something only once it was handed to Kafka: before that, a client
       following it would find nothing (its key's command, if any, has another id). */
    if (!json_object_get(problem, "command_id") && p->produced_us)
        json_object_set_new(problem, "command_id", json_string(p->in.command_id));
    gateway_problem(p->g, p->req, problem);
    pending_done(p);
}

void pending_accepted(pending *p)
{
    char location[64];
    snprintf(location, sizeof(location), "/v1/commands/%s", p->in.command_id);
    set_common_headers(p);
    set_preference_applied(p);
    http_req_set_header(p->req, "Location", location);
    /* Written as text: this answer is the one every optimistic request gets. */
    jsontext body = {0};
    JSONTEXT_LIT(&body, "{\"command_id\":");
    jsontext_str(&body, p->in.command_id);
    JSONTEXT_LIT(&body, ",\"status\":\"accepted\",\"aggregate_type\":");
    jsontext_str(&body, domain_command_aggregate(p->in.cmd));
    JSONTEXT_LIT(&body, ",\"aggregate_id\":");
    jsontext_str(&body, p->in.aggregate_id);
    JSONTEXT_LIT(&body, ",\"idempotency_key\":");
    jsontext_str(&body, p->in.idempotency_key);
    JSONTEXT_LIT(&body, "}");
    http_req_reply_jsontext(p->req, 202, &body);
    pending_done(p);
}

void pending_result(pending *p, int status, json_t *body, bool replayed)
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
