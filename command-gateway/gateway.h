/* gateway.h: the command-gateway's configuration, shared state and request entry points. */
#ifndef CQRS_GATEWAY_H
#define CQRS_GATEWAY_H

#include "auth.h"
#include "core/config.h"
#include "domain/domain.h"
#include "http/httpd.h"
#include "kafka/kafka.h"
#include "sizelimits.h"
#include "core/metrics.h"
#include "pg/pgconn.h"
#include "ratelimit.h"
#include "replies.h"
#include "retryafter.h"
#include "core/strmap.h"

#include <stdatomic.h>
#include <stdbool.h>

struct event_base;

typedef struct gateway_config {
    char *http_host;
    long long http_port;
    long long http_max_body; /* 0: derived, see sizelimits.h; the gateway's limits hold the value */
    long long http_timeout_s;
    long long http_header_timeout_s;
    long long http_body_timeout_s;
    long long http_max_connections; /* per worker; main derives it when 0 */
    char *pg_conninfo;
    char *pg_read_conninfo;
    long long reads_max_wait_ms;
    long long reads_default_limit;
    long long reads_max_limit;
    char *topic_prefix;
    char *schemas_dir;
    char *replies_group;
    char *tenant_default;
    char *log_level;
    long long sync_timeout_ms;
    long long sync_max_wait_ms;
    long long max_parked;
    long long inflight_timeout_s;
    long long topics_partitions;
    long long topics_replication;
    long long workers;
    long long drain_timeout_ms;
    char *auth_mode; /* "jwt" or "off" */
    char *auth_algorithm;
    char *auth_key_file;
    char *auth_issuer;
    char *auth_audience;
    char *auth_tenant_claim;
    long long auth_leeway_s;
    bool auth_scopes;
    long long ratelimit_rate; /* requests a second per tenant and process; 0: no limit */
    long long ratelimit_burst;
} gateway_config;

/* The configuration table of the gateway (ended by a NULL row). */
extern const config_row gateway_config_table[];

/* What the workers of one process share; owned by main. */
typedef struct gateway_shared {
    metrics *metrics; /* values are atomics */
    size_t workers;   /* gateways in the process */
    replies *replies; /* the process's replies consumer: thread-safe */
    const auth *auth; /* read-only once built; NULL: authentication is off */
    ratelimit *limit; /* NULL: no rate limit */
} gateway_shared;

typedef struct gateway {
    const gateway_config *cfg; /* borrowed from main */
    gateway_shared *shared;
    struct event_base *base;
    domain_registry *domains;
    httpd *http;
    kafka_producer *producer;
    replies_inbox *inbox; /* where the replies to this worker's requests arrive */
    pgconn *pg;           /* read-write: idempotency claims, command records */
    pgconn *pg_read;      /* read-only sessions: projection reads */
    struct readwait *readwait;
    metrics *metrics;  /* shared->metrics */
    sizelimits limits; /* the body and message bounds, settled at start */
    char *topic_commands;
    char *topic_replies;
    strmap *parked;       /* command id -> struct pending, while the request waits */
    struct pending *held; /* sync requests waiting for the process to route replies */
    size_t nheld;
    bool stopping;
    size_t live;                /* POST requests held, not answered yet */
    struct pending **accepting; /* 202s waiting for their record, see accept_flush() */
    size_t naccepting, accepting_cap;
    bool accept_inflight; /* an INSERT of accepted records is out */
    struct event *accept_flush_ev;
    struct event *drain; /* while stopping: ends the loop once nothing is held */
    long long drain_until_us;
    retry_after retry; /* the Retry-After of its 503s */
    metrics_counter *m_produced, *m_produce_failed, *m_replies, *m_replies_unmatched, *m_replayed;
    metrics_histogram *m_latency;
    metrics_histogram *m_kafka_ack;  /* produce -> Kafka's confirmation */
    metrics_histogram *m_reply_wait; /* sync: produce -> the reply */
    metrics_gauge *m_parked, *m_connections, *m_unanswered;
    metrics_counter *m_accept_paused;
    metrics_counter *m_auth_refused, *m_rate_limited;
    metrics_counter *m_status[500]; /* answers by status 100..599, registered on first use */
    char *openapi;                  /* GET /openapi.json: the document, built at start-up */
    size_t openapi_len;
} gateway;

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
 * Builds one gateway (a worker: a replica of its own) on base: loads schemas, connects
 * (asynchronously) to PostgreSQL and Kafka, joins the replies group and listens. shared is
 * borrowed. Returns NULL with err on a configuration problem.
 */
gateway *gateway_new(struct event_base *base, const gateway_config *cfg,
                     const config_props *kafka_props, gateway_shared *shared, char *err,
                     size_t errlen);
/*
 * The authenticator cfg asks for: *out is NULL when auth.mode is off. -1 with err naming the bad
 * key.
 */
int gateway_auth_new(const gateway_config *cfg, auth **out, char *err, size_t errlen);
/*
 * Stops listening, answers every parked request whose command is in Kafka with 202, and ends
 * the loop once every request held is answered (the rest get 202 as their delivery reports
 * come) or after drain.timeout_ms.
 */
void gateway_drain(gateway *g);
/* Flushes the producer and frees everything. */
void gateway_free(gateway *g);

/*
 * Bodies up to this much over http.max_body are read, then refused with a problem+json 413 by
 * commands_post(); larger ones evhttp refuses unread, with a bare 413.
 */
#define COMMANDS_BODY_GRACE 65536
/* POST /v1/commands (commands.c). */
void commands_post(gateway *g, http_req *req, const char *tenant);
/* Delivery report for a produced command (commands.c). */
void commands_on_delivery(void *opaque, const kafka_delivery *d, void *arg);
/* Replies to this worker's requests (commands.c). */
void commands_on_replies(const replies_msg *msgs, size_t n, void *arg);
/* The process can route replies again: held sync requests go on (commands.c). */
void commands_on_routable(void *arg);
/* Writes the accepted records still gathered (shutdown: before the PostgreSQL connection goes). */
void commands_flush_accepted(gateway *g);
/* Answers every parked request with 202, and every held one with 503 (commands.c). */
void commands_release_parked(gateway *g);

/* GET /v1/commands/{id} (reads.c). */
void reads_command(gateway *g, http_req *req, const char *tenant, const char *id);
/* GET /v1/aggregates/{type}/{id} from the projection, ?min_version=N (reads.c). */
void reads_aggregate(gateway *g, http_req *req, const char *tenant, const char *type,
                     const char *id);
/* GET /v1/aggregates/{type}?filters&sort&limit&cursor from the projection (queries.c). */
void queries_list(gateway *g, http_req *req, const char *tenant, const char *type);

/* Writes the standard answer for a failure and counts it. */
void gateway_problem(gateway *g, http_req *req, json_t *problem);

#endif
