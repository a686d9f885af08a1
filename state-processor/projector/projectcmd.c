/* projectcmd.c: state-processor project: the projector's configuration, then its life. */
#include "projector/projectcmd.h"

#include "core/log.h"
#include "loop/looprun.h"
#include "projector/projector.h"
#include "core/service.h"
#include "core/xalloc.h"

#include <stdlib.h>

static void *create(struct event_base *base, const processor_config *cfg, const config_props *kafka,
                    char *err, size_t errlen)
{
    return projector_new(base, cfg, kafka, err, errlen);
}

static txloop *loop_of(void *p)
{
    return projector_loop(p);
}

static void destroy(void *p)
{
    projector_free(p);
}

int projectcmd_main(int argc, char **argv)
{
    processor_config cfg = {0};
    config_props kafka = {0};
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
    static const looprun_service svc = {create, loop_of, destroy};
    rc = looprun(&svc, &cfg, &kafka);
out:
    config_free(projector_config_table, &cfg);
    config_props_free(&kafka);
    free(args);
    return rc;
}

const config_row projector_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {ROW_SCHEMAS_DIR},
    {ROW_MIGRATIONS_DIR},
    {"projector.group", CONFIG_STR, PROCCONFIG_AT(projector_group), NULL, 0, 0,
     "consumer group of the projectors (empty: <topic.prefix>projector)"},
    {ROW_TENANT_DEFAULT},
    {ROW_LOG_LEVEL},
    {ROW_HTTP_HOST},
    {ROW_HTTP_PORT},
    {"batch.max", CONFIG_INT, PROCCONFIG_AT(batch_max), "500", 1, 100000,
     "most events projected in one transaction"},
    {ROW_RETRY_MAX_MS},
    {ROW_STARTUP_TIMEOUT},
    {ROW_TOPICS_PARTITIONS},
    {ROW_TOPICS_REPLICATION},
    {ROW_OFFSETS_ON_MISMATCH},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};
