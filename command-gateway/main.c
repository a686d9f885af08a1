/* main.c: command-gateway: configuration, event loop, signals, teardown. */
#include "gateway.h"
#include "log.h"
#include "service.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    gateway *g = arg;
    log_kv(LOG_INFO, "stopping", LOG_FIELDS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    gateway_drain(g);
    /* Give the answers just written a moment to leave before the connections go. */
    struct timeval grace = {0, 200000};
    event_base_loopexit(g->base, &grace);
}

int main(int argc, char **argv)
{
    gateway_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;

    if (!service_setup("command-gateway",
                       "Accepts commands over HTTP, publishes them to Kafka and answers with their "
                       "result; serves reads from PostgreSQL.",
                       gateway_config_table, &cfg, &kafka, argc, argv, &rc))
        goto out;
    rc = EXIT_FAILURE;

    struct event_base *base = event_base_new();
    gateway *g = gateway_new(base, &cfg, &kafka, err, sizeof(err));
    if (!g) {
        log_kv(LOG_FATAL, "cannot start", LOG_FIELDS("error", err));
        event_base_free(base);
        goto out;
    }
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, g);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, g);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    event_base_dispatch(base);

    event_free(sigint);
    event_free(sigterm);
    gateway_free(g);
    event_base_free(base);
    log_kv(LOG_INFO, "stopped", NULL);
    rc = EXIT_SUCCESS;
out:
    config_free(gateway_config_table, &cfg);
    config_props_free(&kafka);
    return rc;
}
