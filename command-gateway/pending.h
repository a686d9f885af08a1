/*
 * pending.h: one write request from arrival to answer, which the intake (commands.c), the reply
 * router (replyroute.c) and the accepted-record batching (accepted.c) share, and the answers
 * that end it.
 */
#ifndef CQRS_PENDING_H
#define CQRS_PENDING_H

#include "auth.h"
#include "core/ids.h"
#include "core/trace.h"
#include "gateway.h"
#include "http/httpd.h"
#include "http/problem.h"
#include "intake.h"

#include <jansson.h>
#include <stdbool.h>

struct event;

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
    bool recorded;              /* the accepted record was asked for (accepted_record()) */
    bool accept_due;            /* 202 is the answer once the record is written */
    json_t *reply;              /* the reply, when it came while the record was written */
    int release_tries;          /* DELETEs of the claim sent (a lost connection gets another) */
    problem_kind release_kind;  /* once the claim is released: the answer to a waiting request */
    const char *release_detail; /* ... its detail (static); NULL: the request is answered already */
    bool wants_reply;           /* sync with a reply partition: answer from the reply */
    bool parked;                /* present in g->parked */
    bool wait_over;       /* the client's wait ended before Kafka confirmed: 202 once it does */
    long long arrived_us; /* monotonic */
    /* Held: a sync request that came before the process could route replies (commands.c). */
    struct event *hold;
    struct pending *held_prev, *held_next; /* in g->held */
    bool held;
} pending;

/* Freed once answered (or gone) and no longer referred to by Kafka or PostgreSQL. */
void pending_maybe_free(pending *p);
/* The request got its answer (or its client left): drop every reference to it. */
void pending_done(pending *p);
/* Answers with problem (taken), the key's headers and, once produced, the command's id. */
void pending_problem(pending *p, json_t *problem);
/* 202: the command is durably in Kafka; its status is at Location. */
void pending_accepted(pending *p);
/*
 * Answers a finished command: its status and body (a result or a problem), with
 * Idempotent-Replayed: true when replayed. Takes ownership of body.
 */
void pending_result(pending *p, int status, json_t *body, bool replayed);

#endif
