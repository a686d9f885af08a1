/*
 * replies.h: the gateway process's one replies consumer and the hand-over of each reply to the
 * worker whose request waits for it (ADR 0019). The consumer runs on the main thread's loop;
 * workers call in from their own threads.
 */
#ifndef CQRS_REPLIES_H
#define CQRS_REPLIES_H

#include "core/config.h"
#include "core/metrics.h"

#include <stdbool.h>
#include <stddef.h>

struct event_base;

typedef struct replies replies;
typedef struct replies_inbox replies_inbox;

/* One reply handed to a worker; borrowed for the callback. */
typedef struct replies_msg {
    const char *command_id;
    const char *value; /* the processor's reply: {command_id, http_status, body, ...} */
    size_t len;
} replies_msg;

/* Replies for the worker's waiting requests, on the worker's loop. */
typedef void (*replies_deliver_cb)(const replies_msg *msgs, size_t n, void *arg);
/* The process can route replies again (a partition became routable), on the worker's loop. */
typedef void (*replies_routable_cb)(void *arg);

/* The router, without its consumer yet (replies_start()); caller frees with replies_free(). */
replies *replies_new(metrics *m);
/*
 * Joins group on topic with one consumer on base (the main thread's loop), with kafka_props
 * applied. Call after every worker is attached, and once the topic exists. -1 with err.
 */
int replies_start(replies *r, struct event_base *base, const config_props *kafka_props,
                  const char *group, const char *topic, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/*
 * A worker's inbox: deliver and routable run on wbase's loop with arg. Call from the thread
 * that builds the worker, before its loop runs. Freed by replies_detach().
 */
replies_inbox *replies_attach(replies *r, struct event_base *wbase, replies_deliver_cb deliver,
                              replies_routable_cb routable, void *arg);
/* Drops the inbox's waits and frees it (the worker's loop no longer runs). */
void replies_detach(replies *r, replies_inbox *in);
/*
 * The worker's request for command_id waits for its reply: returns the partition to name in
 * the command (round robin over the routable ones), or -1 when none is routable or another
 * request of the process already waits for that command id. Thread-safe.
 */
int replies_expect(replies *r, replies_inbox *in, const char *command_id);
/* The request no longer waits (answered, timed out, gone). Thread-safe. */
void replies_forget(replies *r, replies_inbox *in, const char *command_id);
/* True when the process owns a partition it can name in commands. Thread-safe. */
bool replies_ready(replies *r);
/* Leaves the group (blocking: shutdown only, after the workers are detached) and frees. */
void replies_free(replies *r);

#endif
