/*
 * gateway.h: one command-gateway worker, opaque: its configuration, what the workers of a
 * process share, and its life (new, drain, free). The modules see its innards through
 * gateway_int.h.
 */
#ifndef CQRS_GATEWAY_H
#define CQRS_GATEWAY_H

#include "auth.h"
#include "core/config.h"
#include "core/metrics.h"
#include "ratelimit.h"
#include "replies.h"

#include <stdbool.h>
#include <stddef.h>

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

typedef struct gateway gateway;

/*
 * Builds one gateway (a worker: a replica of its own) on base: loads schemas, connects
 * (asynchronously) to PostgreSQL and Kafka, joins the replies group and listens. shared is
 * borrowed. Returns NULL with err on a configuration problem.
 */
gateway *gateway_new(struct event_base *base, const gateway_config *cfg,
                     const config_props *kafka_props, gateway_shared *shared, char *err,
                     size_t errlen);
/* The port the gateway listens on (the one the system chose for http.port 0). */
int gateway_port(const gateway *g);
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
/*
 * After the drain, in the worker's thread: waits for Kafka's confirmation of what the producer
 * still holds until the drain's deadline, one second at least, then purges the rest (their
 * requests get their callbacks). The workers wait at the same time, so a gateway stops within
 * drain.timeout_ms and a second or two, however many workers it has and whether Kafka answers.
 */
void gateway_flush(gateway *g);
/* Flushes the producer (gateway_flush(), if the drain did not) and frees everything. */
void gateway_free(gateway *g);

#endif
