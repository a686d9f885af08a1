/* queries.h: lists of projection rows. */
#ifndef CQRS_QUERIES_H
#define CQRS_QUERIES_H

#include "gateway.h"
#include "http/httpd.h"

/* GET /v1/aggregates/{type}?filters&sort&limit&cursor from the projection. */
void queries_list(gateway *g, http_req *req, const char *tenant, const char *type);

#endif
