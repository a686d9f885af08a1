/* workers.c: the worker threads of the gateway process, each with its loop and gateway. */
#include "workers.h"

#include "core/xalloc.h"

#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct worker {
    struct event_base *base;
    gateway *g;
    struct event *drain; /* activated from the main thread */
    pthread_t thread;
    bool running;
} worker;

struct workers {
    worker *w;
    size_t n;
};

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    worker *w = arg;
    gateway_drain(w->g); /* ends the worker's loop once its requests are answered */
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    event_base_dispatch(w->base);
    gateway_flush(w->g); /* in this thread: the workers wait for Kafka at the same time */
    return NULL;
}

static void free_workers(worker *ws, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        gateway_free(ws[i].g);
        if (ws[i].drain)
            event_free(ws[i].drain);
        if (ws[i].base)
            event_base_free(ws[i].base);
    }
    free(ws);
}

workers *workers_start(size_t n, gateway_config *cfg, const config_props *kafka,
                       gateway_shared *shared, char *err, size_t errlen)
{
    worker *ws = xcalloc(n, sizeof(*ws));
    for (size_t i = 0; i < n; i++) {
        ws[i].base = event_base_new();
        ws[i].g = ws[i].base ? gateway_new(ws[i].base, cfg, kafka, shared, err, errlen) : NULL;
        if (!ws[i].g) {
            if (!ws[i].base)
                snprintf(err, errlen, "event_base_new failed");
            free_workers(ws, i + 1);
            return NULL;
        }
        ws[i].drain = event_new(ws[i].base, -1, 0, on_drain, &ws[i]);
        if (i == 0)
            cfg->http_port = gateway_port(ws[0].g);
    }
    workers *all = xcalloc(1, sizeof(*all));
    all->w = ws;
    all->n = n;
    return all;
}

bool workers_run(workers *ws)
{
    /* Signals go to the main thread only: the workers start with them blocked. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    bool started = true;
    for (size_t i = 0; i < ws->n && started; i++) {
        started = pthread_create(&ws->w[i].thread, NULL, run_worker, &ws->w[i]) == 0;
        ws->w[i].running = started;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return started;
}

void workers_stop(workers *ws)
{
    for (size_t i = 0; i < ws->n; i++)
        event_active(ws->w[i].drain, 0, 0);
    for (size_t i = 0; i < ws->n; i++) {
        if (ws->w[i].running)
            pthread_join(ws->w[i].thread, NULL);
    }
}

void workers_free(workers *ws)
{
    if (!ws)
        return;
    free_workers(ws->w, ws->n);
    free(ws);
}
