/* looprun.h: the life of a long-lived mode of state-processor (the processor, the projector). */
#ifndef CQRS_LOOPRUN_H
#define CQRS_LOOPRUN_H

#include "loop/procconfig.h"
#include "loop/txloop.h"

#include <event2/event.h>
#include <stddef.h>

typedef struct looprun_service {
    /* Makes the service on base; NULL with err on failure. */
    void *(*create)(struct event_base *base, const processor_config *cfg, const config_props *kafka,
                    char *err, size_t errlen);
    txloop *(*loop)(void *svc); /* the loop it runs */
    void (*destroy)(void *svc);
} looprun_service;

/*
 * Sets the database up (migrations, projection tables), makes the service on an event loop of
 * its own and runs it until SIGINT or SIGTERM, which stop it between batches, or until it stops
 * for an operator. EXIT_SUCCESS, or EXIT_FAILURE after a start-up error or a stop for an
 * operator.
 */
int looprun(const looprun_service *s, const processor_config *cfg, const config_props *kafka);

#endif
