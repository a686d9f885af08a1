/*
 * waitfor.h: the one way tests wait for a condition: polled every WAITFOR_POLL_MS on the monotonic
 * clock until it holds or timeout_ms of real time has passed (however long each check takes).
 * The poll interval is the only fixed wait; what a test waits for is always the condition.
 */
#ifndef CQRS_WAITFOR_H
#define CQRS_WAITFOR_H

#include <stdbool.h>

#define WAITFOR_POLL_MS 20

/* Calls cond(arg) until it returns true or timeout_ms passes; returns its last answer. */
bool waitfor(bool (*cond)(void *arg), void *arg, int timeout_ms);

struct event_base;
/* As waitfor(), but runs base's loop for WAITFOR_POLL_MS between the checks instead of sleeping:
   for services running in-process on base. */
bool waitfor_loop(struct event_base *base, bool (*cond)(void *arg), void *arg, int timeout_ms);

#endif
