/*
 * commands.h: the intake of commands, POST /v1/commands: a command is validated, its key
 * claimed, and it is produced to Kafka keyed by aggregate id; a sync request that comes before
 * the process can route replies is held until it can.
 */
#ifndef CQRS_COMMANDS_H
#define CQRS_COMMANDS_H

#include "gateway.h"
#include "http/httpd.h"
#include "kafka/kafka.h"

struct pending;

/*
 * Bodies up to this much over http.max_body are read, then refused with a problem+json 413 by
 * commands_post(); larger ones evhttp refuses unread, with a bare 413.
 */
#define COMMANDS_BODY_GRACE 65536
/* POST /v1/commands. */
void commands_post(gateway *g, http_req *req, const char *tenant);
/* Delivery report for a produced command. */
void commands_on_delivery(void *opaque, const kafka_delivery *d, void *arg);
/* The process can route replies again: held sync requests go on. */
void commands_on_routable(void *arg);
/* Answers every parked request whose command is in Kafka with 202, and every held one with 503. */
void commands_release_parked(gateway *g);
/* The request is answered or gone: its claim still queued is dropped, and it is held no more. */
void commands_detach(struct pending *p);

#endif
