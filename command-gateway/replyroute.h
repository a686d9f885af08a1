/*
 * replyroute.h: the replies of a worker's sync requests: the requests parked for their reply,
 * and the answer each reply makes.
 */
#ifndef CQRS_REPLYROUTE_H
#define CQRS_REPLYROUTE_H

#include "gateway.h"
#include "replies.h"

#include <jansson.h>
#include <stddef.h>

struct pending;

/*
 * Parks a sync request for its reply before its command leaves: returns the reply partition to
 * name in the command, or -1 when it will not wait for one (async, nothing routable, or another
 * request of the process waits for that command id).
 */
int replyroute_park(struct pending *p);
/* The request waits for its reply no more (answered, timed out, gone). */
void replyroute_forget(struct pending *p);
/* Answers a request from its reply; reply is borrowed. */
void replyroute_answer(struct pending *p, json_t *reply);
/* Replies to this worker's requests (replies_deliver_cb). */
void replyroute_on_replies(const replies_msg *msgs, size_t n, void *arg);
/* Answers every parked request whose command is in Kafka with 202. */
void replyroute_release(gateway *g);

#endif
