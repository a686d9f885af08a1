/* health.h: the processor's operational endpoint: /healthz, /readyz and /metrics over HTTP. */
#ifndef CQRS_HEALTH_H
#define CQRS_HEALTH_H

#include "core/metrics.h"

#include <stdbool.h>
#include <stddef.h>

struct event_base;

typedef struct health health;

/* True when the service can do its work (answers /readyz with 200, else 503). */
typedef bool (*health_ready_fn)(void *arg);

/*
 * Serves the endpoint on host:port (0: any free port). m is borrowed and rendered on /metrics.
 * Returns NULL with err when the port cannot be bound.
 */
health *health_new(struct event_base *base, const char *host, int port, metrics *m,
                   health_ready_fn ready, void *arg, char *err, size_t errlen);
/* The bound port. */
int health_port(const health *h);
/* Stops serving and frees the endpoint. */
void health_free(health *h);

#endif
