/* fuzz_domains.h: the domain registry both harnesses load once, from CQRS_SCHEMAS_DIR. */
#ifndef CQRS_FUZZ_DOMAINS_H
#define CQRS_FUZZ_DOMAINS_H

#include "domain/domain.h"
#include "core/log.h"

#include <stdlib.h>

/* Quiets the logs and loads the domains; aborts (a harness cannot run without them). */
static domain_registry *fuzz_load_domains(const char *name)
{
    log_init(name, LOG_FATAL);
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    char err[512];
    domain_registry *reg = domain_registry_load(dir ? dir : "schemas/domains", err, sizeof(err));
    if (!reg) {
        log_kv(LOG_FATAL, "cannot load the domains", LOG_FIELDS("error", err));
        abort();
    }
    return reg;
}

#endif
