/*
 * workers.h: a process's gateways, each a worker with its own event loop on a thread of its
 * own (ADR 0008): start-up, the threads, and the drain that ends them.
 */
#ifndef CQRS_WORKERS_H
#define CQRS_WORKERS_H

#include "core/config.h"
#include "gateway.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct workers workers;

/*
 * Builds n workers on cfg, which they keep. The first binds the port (perhaps chosen by the
 * system: http.port 0); cfg then names that port for the others. NULL with err.
 */
workers *workers_start(size_t n, gateway_config *cfg, const config_props *kafka,
                       gateway_shared *shared, char *err, size_t errlen);
/*
 * Runs each worker's loop on a thread of its own, started with SIGINT and SIGTERM blocked so
 * that signals go to the calling thread. False when a thread could not be started.
 */
bool workers_run(workers *ws);
/* Tells every worker to drain (gateway_drain()) and waits for the threads to end. */
void workers_stop(workers *ws);
/* Frees the gateways and their loops; the threads have ended. */
void workers_free(workers *ws);

#endif
