/* reads.h: a command's status, and one aggregate from its projection. */
#ifndef CQRS_READS_H
#define CQRS_READS_H

#include "gateway.h"
#include "http/httpd.h"

/* GET /v1/commands/{id}. */
void reads_command(gateway *g, http_req *req, const char *tenant, const char *id);
/* GET /v1/aggregates/{type}/{id} from the projection, ?min_version=N. */
void reads_aggregate(gateway *g, http_req *req, const char *tenant, const char *type,
                     const char *id);

#endif
