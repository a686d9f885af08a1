/*
 * main.c: state-processor: configuration, database set-up, event loop, signals, teardown.
 * `state-processor project ...` runs the projector instead (projectcmd.c).
 */
#include "dbsetup.h"
#include "lagcmd.h"
#include "log.h"
#include "processor.h"
#include "projectcmd.h"
#include "rebuildcmd.h"
#include "redrive.h"
#include "replay.h"
#include "service.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_kv(LOG_INFO, "stopping after the batch in hand",
           LOG_FIELDS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    processor_stop(arg);
}

/*
 * `state-processor migrate`: applies the migrations and creates the projection tables, then
 * exits (0 when the database is up to date). For a deployment's migration job, so that the
 * services can start without schema rights; every service still checks at start.
 */
static int migrate_main(int argc, char **argv)
{
    processor_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;
    if (service_setup("state-processor migrate",
                      "Applies the SQL migrations in migrations.dir and creates the projection "
                      "tables of the domains in schemas.dir, then exits.",
                      processor_config_table, &cfg, &kafka, argc, argv, &rc)) {
        rc = EXIT_SUCCESS;
        if (dbsetup_apply(&cfg, err, sizeof(err)) != 0) {
            log_kv(LOG_FATAL, "cannot set up the database", LOG_FIELDS("error", err));
            rc = EXIT_FAILURE;
        }
    }
    config_free(processor_config_table, &cfg);
    config_props_free(&kafka);
    return rc;
}

int main(int argc, char **argv)
{
    processor_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;

    /* The other modes, each with its own configuration and --help. */
    static const struct {
        const char *name;
        int (*main)(int argc, char **argv);
    } modes[] = {
        {"project", projectcmd_main}, {"rebuild", rebuildcmd_main}, {"lag", lagcmd_main},
        {"replay", replay_main},      {"redrive", redrive_main},    {"migrate", migrate_main},
    };
    for (size_t i = 0; argc > 1 && i < sizeof(modes) / sizeof(modes[0]); i++)
        if (strcmp(argv[1], modes[i].name) == 0)
            return modes[i].main(argc - 1, argv + 1);
    if (!service_setup("state-processor",
                       "Consumes commands as a consumer group and applies each exactly once in "
                       "PostgreSQL; emits replies and domain events. Other modes, each with "
                       "--help: project (the projector), rebuild, lag, replay, redrive, migrate "
                       "(docs/operators.md).",
                       processor_config_table, &cfg, &kafka, argc, argv, &rc))
        goto out;
    rc = EXIT_FAILURE;

    if (dbsetup_apply(&cfg, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "cannot set up the database", LOG_FIELDS("error", err));
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
    bool failed = processor_failed(p);
    processor_free(p);
    event_base_free(base);
    log_kv(failed ? LOG_ERROR : LOG_INFO, "stopped", NULL);
    rc = failed ? EXIT_FAILURE : EXIT_SUCCESS;
out:
    config_free(processor_config_table, &cfg);
    config_props_free(&kafka);
    return rc;
}
