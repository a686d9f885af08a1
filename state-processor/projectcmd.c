/* projectcmd.c: state-processor project: configuration, database set-up, loop, signals, teardown.
 */
#include "projectcmd.h"

#include "dbsetup.h"
#include "log.h"
#include "projector.h"
#include "service.h"
#include "xalloc.h"

#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_kv(LOG_INFO, "stopping after the batch in hand",
           LOG_FIELDS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    projector_stop(arg);
}

int projectcmd_main(int argc, char **argv)
{
    processor_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;
    /* The usage line names the subcommand: "state-processor project [--key=value ...]". */
    char **args = xcalloc((size_t)argc + 1, sizeof(char *));
    args[0] = "state-processor project";
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];

    if (!service_setup("projector",
                       "Consumes the events topic as a consumer group and keeps one projection "
                       "table per aggregate type in PostgreSQL, with the offsets in the same "
                       "transaction.",
                       projector_config_table, &cfg, &kafka, argc, args, &rc))
        goto out;
    rc = EXIT_FAILURE;

    if (dbsetup_apply(&cfg, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "cannot set up the database", LOG_FIELDS("error", err));
        goto out;
    }
    struct event_base *base = event_base_new();
    projector *p = projector_new(base, &cfg, &kafka, err, sizeof(err));
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
    bool failed = projector_failed(p);
    projector_free(p);
    event_base_free(base);
    log_kv(failed ? LOG_ERROR : LOG_INFO, "stopped", NULL);
    rc = failed ? EXIT_FAILURE : EXIT_SUCCESS;
out:
    config_free(projector_config_table, &cfg);
    config_props_free(&kafka);
    free(args);
    return rc;
}
