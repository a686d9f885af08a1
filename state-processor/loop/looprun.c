/* looprun.c: database set-up, event loop, signals and teardown of a long-lived mode. */
#include "loop/looprun.h"

#include "loop/dbsetup.h"
#include "core/log.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_kv(LOG_INFO, "stopping after the batch in hand",
           LOG_FIELDS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    txloop_stop(arg);
}

int looprun(const looprun_service *s, const processor_config *cfg, const config_props *kafka)
{
    char err[512];
    if (dbsetup_apply(cfg, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "cannot set up the database", LOG_FIELDS("error", err));
        return EXIT_FAILURE;
    }
    struct event_base *base = event_base_new();
    void *svc = base ? s->create(base, cfg, kafka, err, sizeof(err)) : NULL;
    if (!svc) {
        log_kv(LOG_FATAL, "cannot start", LOG_FIELDS("error", base ? err : "event_base_new"));
        if (base)
            event_base_free(base);
        return EXIT_FAILURE;
    }
    txloop *loop = s->loop(svc);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, loop);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, loop);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    event_base_dispatch(base);

    event_free(sigint);
    event_free(sigterm);
    bool failed = txloop_failed(loop);
    s->destroy(svc);
    event_base_free(base);
    log_kv(failed ? LOG_ERROR : LOG_INFO, "stopped", NULL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
