/*
 * main.c: state-processor: its modes, the processor's configuration, then its life (looprun.c).
 * `state-processor project ...` runs the projector instead (projectcmd.c).
 */
#include "loop/dbsetup.h"
#include "ops/lagcmd.h"
#include "core/log.h"
#include "loop/looprun.h"
#include "processor/processor.h"
#include "projector/projectcmd.h"
#include "ops/rebuild/rebuildcmd.h"
#include "ops/redrive.h"
#include "ops/replay.h"
#include "core/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *create(struct event_base *base, const processor_config *cfg, const config_props *kafka,
                    char *err, size_t errlen)
{
    return processor_new(base, cfg, kafka, err, errlen);
}

static txloop *loop_of(void *p)
{
    return processor_loop(p);
}

static void destroy(void *p)
{
    processor_free(p);
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
    static const looprun_service svc = {create, loop_of, destroy};
    rc = looprun(&svc, &cfg, &kafka);
out:
    config_free(processor_config_table, &cfg);
    config_props_free(&kafka);
    return rc;
}
