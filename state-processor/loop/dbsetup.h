/* dbsetup.h: the database both modes of state-processor need before their event loop starts. */
#ifndef CQRS_DBSETUP_H
#define CQRS_DBSETUP_H

#include "loop/procconfig.h"

#include <stddef.h>

/*
 * Applies the migrations (cfg->migrations_dir), then creates every aggregate type's projection
 * table with its declared columns and indexes (cfg->schemas_dir; projection_ddl()), which the
 * gateway reads and the projector writes. Waits up to cfg->startup_timeout_s for PostgreSQL,
 * retrying each second. A table already complete is only checked, never locked. Returns 0, or -1
 * with err. Blocking: call before the event loop starts.
 */
int dbsetup_apply(const processor_config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
