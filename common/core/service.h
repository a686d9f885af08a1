/* service.h: the start-up steps both binaries share: configuration, --help, logging. */
#ifndef CQRS_SERVICE_H
#define CQRS_SERVICE_H

#include "core/config.h"

#include <stdbool.h>

/*
 * Loads the configuration (see config_load()), answers --help, checks and applies the
 * "log.level" key, ignores SIGPIPE and defaults kafka.bootstrap.servers to 127.0.0.1:9092.
 * Returns true when the service should start; otherwise *exit_code says how to exit (0 after
 * --help, 1 after a configuration error, which is logged naming the key).
 */
bool service_setup(const char *name, const char *summary, const config_row *table, void *cfg,
                   config_props *kafka, int argc, char **argv, int *exit_code)
    __attribute__((warn_unused_result));

#endif
