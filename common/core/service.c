/* service.c: shared start-up of command-gateway and state-processor. */
#include "core/service.h"

#include "core/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *log_level_value(const config_row *table, const void *cfg)
{
    for (const config_row *r = table; r->name; r++) {
        if (strcmp(r->name, "log.level") == 0 && r->type == CONFIG_STR)
            return *(char *const *)(const void *)((const char *)cfg + r->offset);
    }
    return "info";
}

bool service_setup(const char *name, const char *summary, const config_row *table, void *cfg,
                   config_props *kafka, int argc, char **argv, int *exit_code)
{
    char err[512];
    log_init(name, LOG_INFO);
    switch (config_load(table, cfg, kafka, argc, argv, err, sizeof(err))) {
    case CONFIG_HELP:
        config_usage(stdout, argv[0], summary, table);
        *exit_code = EXIT_SUCCESS;
        return false;
    case CONFIG_FAILED:
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        *exit_code = EXIT_FAILURE;
        return false;
    case CONFIG_LOADED:
        break;
    }
    log_level level;
    if (!log_level_parse(log_level_value(table, cfg), &level)) {
        log_kv(LOG_FATAL, "bad configuration",
               LOG_FIELDS("error", "log.level: expected debug, info, warn or error"));
        *exit_code = EXIT_FAILURE;
        return false;
    }
    log_init(name, level);
    if (!config_props_get(kafka, "bootstrap.servers"))
        config_props_set(kafka, "bootstrap.servers", "127.0.0.1:9092");
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not a death */
    *exit_code = EXIT_SUCCESS;
    return true;
}
