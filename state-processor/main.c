/* main.c: state-processor: configuration, migrations, event loop, signals, teardown. */
#include "log.h"
#include "pgmigrate.h"
#include "processor.h"
#include "service.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_kv(LOG_INFO, "stopping after the batch in hand",
           LOG_FIELDS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    processor_stop(arg);
}

/* Runs the migrations, waiting for PostgreSQL to come up for at most timeout_s. */
static int migrate(const processor_config *cfg, char *err, size_t errlen)
{
    for (long long waited = 0;; waited++) {
        if (pgmigrate_apply(cfg->pg_conninfo, cfg->migrations_dir, err, errlen) == 0)
            return 0;
        if (waited >= cfg->startup_timeout_s)
            return -1;
        if (waited == 0)
            log_kv(LOG_WARN, "migrations failed, retrying each second", LOG_FIELDS("error", err));
        sleep(1); /* before the event loop exists: nothing else to serve */
    }
}

int main(int argc, char **argv)
{
    processor_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;

    if (!service_setup("state-processor",
                       "Consumes commands as a consumer group and applies each exactly once in "
                       "PostgreSQL; emits replies and domain events.",
                       processor_config_table, &cfg, &kafka, argc, argv, &rc))
        goto out;
    rc = EXIT_FAILURE;

    if (migrate(&cfg, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "cannot apply migrations", LOG_FIELDS("error", err));
        goto out;
    }
    struct event_base *base = event_base_new();
    processor *p = processor_new(base, &cfg, &kafka, err, sizeof(err));
    if (!p) {
        log_kv(LOG_FATAL, "cannot start", LOG_FIELDS("error", err));
        event_base_free(base);
        goto out;
    }
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, p);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, p);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    event_base_dispatch(base);

    event_free(sigint);
    event_free(sigterm);
    processor_free(p);
    event_base_free(base);
    log_kv(LOG_INFO, "stopped", NULL);
    rc = EXIT_SUCCESS;
out:
    config_free(processor_config_table, &cfg);
    config_props_free(&kafka);
    return rc;
}
