/*
 * routes.h: the route table and the dispatch of every request along it: which path goes where,
 * with which methods, and who may use it.
 */
#ifndef CQRS_ROUTES_H
#define CQRS_ROUTES_H

#include "gateway.h"
#include "http/httpd.h"

#include <stddef.h>

/* What a route's handler gets besides the request; everything is borrowed for the call. */
typedef struct gateway_call {
    char *const *params; /* the path's {name} segments, in template order */
    const char *tenant;  /* the token's tenant, or tenant.default while authentication is off */
} gateway_call;

typedef void (*gateway_handler)(gateway *g, http_req *req, const gateway_call *call);

/* The bit of one method in gateway_route.methods. */
#define GATEWAY_METHOD(m) (1u << (m))
/* GET routes answer HEAD as well (http_req_reply() leaves the body out). */
#define GATEWAY_GET  (GATEWAY_METHOD(HTTP_GET) | GATEWAY_METHOD(HTTP_HEAD))
#define GATEWAY_POST GATEWAY_METHOD(HTTP_POST)
/* Most {name} segments in a path template. */
#define GATEWAY_MAX_PARAMS 4

/* One row of the route table. */
typedef struct gateway_route {
    const char *path; /* template: "/v1/aggregates/{type}/{id}"; {name} matches one segment */
    unsigned methods; /* GATEWAY_METHOD() bits; any other method gets 405 with Allow */
    gateway_handler handler;
    const char *scope; /* the token scope it needs ("commands:write"), or NULL: public */
} gateway_route;

/*
 * The route table every request is matched against, in order; *n gets its length. Static data:
 * never freed. A path no row matches gets 404. openapi.c documents exactly these routes.
 */
const gateway_route *gateway_routes(size_t *n);

/*
 * The httpd handler of a gateway (arg): walks the route table, 404 when no path matches, 405
 * when the method does not; checks the credentials and the rate limit of API routes.
 */
void routes_dispatch(http_req *req, void *arg);

#endif
