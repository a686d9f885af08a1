/* gateway.c: a gateway worker's life: configuration, start-up, answer metrics, drain, teardown. */
#include "gateway.h"

#include "accepted.h"
#include "commands.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "gateway_int.h"
#include "http/problem.h"
#include "pg/pgplans.h"
#include "openapi.h"
#include "readwait.h"
#include "replyroute.h"
#include "routes.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#define CFG(field) offsetof(gateway_config, field)
const config_row gateway_config_table[] = {
    {"http.host", CONFIG_STR, CFG(http_host), "127.0.0.1", 0, 0, "address to listen on"},
    {"http.port", CONFIG_INT, CFG(http_port), "8080", 0, 65535, "port to listen on (0: any)"},
    {"http.max_body", CONFIG_INT, CFG(http_max_body), "0", 0, 64 << 20,
     "largest command body in bytes, 413 beyond (0: kafka.message.max.bytes less the largest "
     "envelope a command carries, so that every command taken fits in a Kafka message)"},
    {"http.timeout_s", CONFIG_INT, CFG(http_timeout_s), "30", 1, 3600,
     "idle timeout, seconds: a connection with no byte moving for this long is closed"},
    {"http.header_timeout_s", CONFIG_INT, CFG(http_header_timeout_s), "10", 1, 3600,
     "a request head must arrive within this many seconds of its first byte, else 408"},
    {"http.body_timeout_s", CONFIG_INT, CFG(http_body_timeout_s), "30", 1, 3600,
     "a request body must arrive within this many seconds of the end of its head, else 408"},
    {"http.max_connections", CONFIG_INT, CFG(http_max_connections), "0", 0, 1000000,
     "open connections per worker; at the cap it stops accepting until one closes (0: as many "
     "as the file-descriptor limit allows)"},
    {"pg.conninfo", CONFIG_STR, CFG(pg_conninfo), "host=127.0.0.1 port=5432 dbname=cqrs", 0, 0,
     "libpq connection string (idempotency claims, command status)"},
    {"pg.read_conninfo", CONFIG_STR, CFG(pg_read_conninfo), "", 0, 0,
     "libpq connection string of the projection reads, in read-only sessions: a hot standby "
     "(target_session_attrs=prefer-standby) takes them off the writer (empty: pg.conninfo)"},
    {"reads.max_wait_ms", CONFIG_INT, CFG(reads_max_wait_ms), "5000", 0, 600000,
     "longest a read with min_version waits for the projection to reach it"},
    {"reads.default_limit", CONFIG_INT, CFG(reads_default_limit), "50", 1, 10000,
     "page size of a list without limit="},
    {"reads.max_limit", CONFIG_INT, CFG(reads_max_limit), "500", 1, 10000,
     "largest limit= of a list"},
    {"topic.prefix", CONFIG_STR, CFG(topic_prefix), NULL, 0, 0,
     "prefix of the topic names (commands, replies)"},
    {"schemas.dir", CONFIG_STR, CFG(schemas_dir), "schemas/domains", 0, 0,
     "folder of the domain files"},
    {"replies.group", CONFIG_STR, CFG(replies_group), "command-gateway", 0, 0,
     "consumer group the replicas share the replies topic in"},
    {"tenant.default", CONFIG_STR, CFG(tenant_default), "default", 0, 0,
     "tenant of every request while authentication is off"},
    {"auth.mode", CONFIG_STR, CFG(auth_mode), "jwt", 0, 0,
     "jwt: every API request needs a bearer token (RFC 6750); off: none does, and every "
     "request is tenant.default"},
    {"auth.algorithm", CONFIG_STR, CFG(auth_algorithm), "RS256", 0, 0,
     "the one algorithm tokens are signed with: HS256, RS256 or ES256"},
    {"auth.key_file", CONFIG_STR, CFG(auth_key_file), "", 0, 0,
     "file of the HS256 secret (32 bytes or more), or of the PEM public key (RSA of 2048 bits "
     "or more; EC on P-256)"},
    {"auth.issuer", CONFIG_STR, CFG(auth_issuer), "", 0, 0,
     "the iss every token must carry (empty: not checked)"},
    {"auth.audience", CONFIG_STR, CFG(auth_audience), "", 0, 0,
     "a value every token's aud must hold (empty: not checked)"},
    {"auth.tenant_claim", CONFIG_STR, CFG(auth_tenant_claim), "tenant", 0, 0,
     "the claim that names the request's tenant"},
    {"auth.leeway_s", CONFIG_INT, CFG(auth_leeway_s), "30", 0, 3600,
     "clock skew allowed on exp and nbf, seconds"},
    {"auth.scopes", CONFIG_BOOL, CFG(auth_scopes), "false", 0, 0,
     "require each route's scope in the token (commands:write, commands:read, aggregates:read)"},
    {"ratelimit.rate", CONFIG_INT, CFG(ratelimit_rate), "0", 0, 10000000,
     "requests a second each tenant may make to this process, 429 beyond (0: no limit)"},
    {"ratelimit.burst", CONFIG_INT, CFG(ratelimit_burst), "0", 0, 10000000,
     "requests a tenant may make at once after a quiet time (0: one second's worth)"},
    {"log.level", CONFIG_STR, CFG(log_level), "info", 0, 0, "debug, info, warn or error"},
    {"drain.timeout_ms", CONFIG_INT, CFG(drain_timeout_ms), "5000", 0, 600000,
     "on SIGTERM, how long requests still waiting for Kafka may hold up the exit"},
    {"workers", CONFIG_INT, CFG(workers), "0", 0, 256,
     "event loops sharing the port (SO_REUSEPORT), each a replica of its own (0: one per core)"},
    {"sync.timeout_ms", CONFIG_INT, CFG(sync_timeout_ms), "5000", 1, 600000,
     "how long a sync request waits for its reply before 202"},
    {"sync.max_wait_ms", CONFIG_INT, CFG(sync_max_wait_ms), "30000", 1, 600000,
     "cap on Prefer: wait=N"},
    {"sync.max_parked", CONFIG_INT, CFG(max_parked), "10000", 1, 1000000,
     "requests waiting at once; 503 beyond"},
    {"idempotency.inflight_timeout_s", CONFIG_INT, CFG(inflight_timeout_s), "60", 1, 86400,
     "age after which a claimed key whose command never reached Kafka is taken over"},
    {"topics.partitions", CONFIG_INT, CFG(topics_partitions), "4", 1, 10000,
     "partitions of the topics created at start when missing"},
    {"topics.replication", CONFIG_INT, CFG(topics_replication), "-1", -1, 100,
     "replication factor of topics created at start (-1: the broker's default)"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

static void on_answer(int status, long long elapsed_us, void *arg)
{
    gateway *g = arg;
    if (status < 100 || status > 599)
        status = 599;
    metrics_counter **c = &g->m_status[status - 100];
    if (!*c) { /* registered on first use, then cached: the registry takes a lock */
        char labels[32];
        snprintf(labels, sizeof(labels), "status=\"%d\"", status);
        *c = metrics_counter_get(g->metrics, "gateway_http_requests_total",
                                 "HTTP answers by status", labels);
    }
    metrics_add(*c, 1);
    metrics_observe_us(g->m_latency, elapsed_us);
}

static void on_conn_event(httpd_conn_event ev, void *arg)
{
    gateway *g = arg;
    switch (ev) {
    case HTTPD_CONN_OPENED:
        metrics_gauge_add(g->m_connections, 1);
        break;
    case HTTPD_CONN_CLOSED:
        metrics_gauge_add(g->m_connections, -1);
        break;
    case HTTPD_ACCEPT_PAUSED:
        metrics_add(g->m_accept_paused, 1);
        break;
    }
}

void gateway_problem(gateway *g, http_req *req, json_t *problem)
{
    if (json_integer_value(json_object_get(problem, "status")) == 503) {
        /* The outage that began first is the one that has lasted. */
        long long down = 0, pg = pgconn_down_since_us(g->pg),
                  kafka = kafka_producer_down_since_us(g->producer);
        if (pg && (!kafka || pg < kafka))
            down = pg;
        else if (kafka)
            down = kafka;
        double load = (double)(strmap_size(g->parked) + g->nheld) / (double)g->cfg->max_parked;
        int drain_s = (int)((g->cfg->sync_timeout_ms + 999) / 1000);
        char retry[16];
        snprintf(retry, sizeof(retry), "%d",
                 retry_after_advise(&g->retry, down, load, drain_s, ids_monotonic_us()));
        http_req_set_header(req, "Retry-After", retry);
    }
    http_req_reply_problem(req, problem);
}

int gateway_auth_new(const gateway_config *cfg, auth **out, char *err, size_t errlen)
{
    *out = NULL;
    if (strcmp(cfg->auth_mode, "off") == 0)
        return 0;
    if (strcmp(cfg->auth_mode, "jwt") != 0) {
        snprintf(err, errlen, "auth.mode: '%s' is not jwt or off", cfg->auth_mode);
        return -1;
    }
    auth_config ac = {.algorithm = cfg->auth_algorithm,
                      .key_file = cfg->auth_key_file,
                      .issuer = cfg->auth_issuer,
                      .audience = cfg->auth_audience,
                      .tenant_claim = cfg->auth_tenant_claim,
                      .leeway_s = cfg->auth_leeway_s};
    *out = auth_new(&ac, err, errlen);
    return *out ? 0 : -1;
}

/* The gateway's series in the process's registry (shared by its workers). */
static void gateway_metrics_get(gateway *g)
{
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    g->m_produced = metrics_counter_get(g->metrics, "gateway_commands_produced_total",
                                        "commands durably written to Kafka", NULL);
    g->m_produce_failed = metrics_counter_get(g->metrics, "gateway_commands_produce_failed_total",
                                              "commands Kafka did not take", NULL);
    g->m_replies = metrics_counter_get(g->metrics, "gateway_replies_received_total",
                                       "replies matched to a waiting request", NULL);
    g->m_replies_unmatched =
        metrics_counter_get(g->metrics, "gateway_replies_unmatched_total",
                            "replies with no waiting request here (timed out or async)", NULL);
    g->m_replayed = metrics_counter_get(g->metrics, "gateway_idempotent_replays_total",
                                        "answers replayed for a repeated Idempotency-Key", NULL);
    g->m_parked = metrics_gauge_get(g->metrics, "gateway_parked_requests",
                                    "sync requests waiting for their reply", NULL);
    g->m_connections =
        metrics_gauge_get(g->metrics, "gateway_http_connections", "client connections open", NULL);
    g->m_unanswered =
        metrics_gauge_get(g->metrics, "gateway_commands_unanswered",
                          "write requests whose client is still waiting for the answer", NULL);
    g->m_accept_paused = metrics_counter_get(
        g->metrics, "gateway_http_accept_paused_total",
        "times a worker reached http.max_connections and paused accepting", NULL);
    g->m_latency = metrics_histogram_get(g->metrics, "gateway_http_request_duration_seconds",
                                         "time from request to answer", bounds,
                                         sizeof(bounds) / sizeof(bounds[0]));
    g->m_kafka_ack = metrics_histogram_get(g->metrics, "gateway_kafka_ack_seconds",
                                           "time from producing a command to Kafka's confirmation",
                                           bounds, sizeof(bounds) / sizeof(bounds[0]));
    g->m_reply_wait = metrics_histogram_get(
        g->metrics, "gateway_reply_wait_seconds",
        "sync requests: time from producing the command to its reply arriving", bounds,
        sizeof(bounds) / sizeof(bounds[0]));
    g->m_auth_refused =
        metrics_counter_get(g->metrics, "gateway_auth_refused_total",
                            "API requests refused for their credentials (401, 403)", NULL);
    g->m_reads_waiting = metrics_gauge_get(g->metrics, "gateway_reads_waiting",
                                           "reads waiting for min_version", NULL);
    g->m_read_lag_rereads =
        metrics_counter_get(g->metrics, "gateway_read_lag_rereads_total",
                            "reads with min_version read again because pg.read_conninfo's server "
                            "had not replayed the version yet",
                            NULL);
    g->m_rate_limited = metrics_counter_get(g->metrics, "gateway_rate_limited_total",
                                            "API requests refused by ratelimit.rate (429)", NULL);
}

static void on_pg_state(bool connected, void *arg)
{
    gateway *g = arg;
    if (connected)
        pgplans_session_started(g->plans);
}

gateway *gateway_new(struct event_base *base, const gateway_config *cfg,
                     const config_props *kafka_props, gateway_shared *shared, char *err,
                     size_t errlen)
{
    gateway *g = xcalloc(1, sizeof(*g));
    g->cfg = cfg;
    g->base = base;
    g->parked = strmap_new();
    retry_after_init(&g->retry, (uint64_t)ids_now_us() ^ (uint64_t)(uintptr_t)g);
    g->shared = shared;
    g->metrics = shared->metrics;
    gateway_metrics_get(g);
    g->topic_commands = xasprintf("%scommands", cfg->topic_prefix);
    g->topic_replies = xasprintf("%sreplies", cfg->topic_prefix);

    g->domains = domain_registry_load(cfg->schemas_dir, err, errlen);
    if (!g->domains)
        goto fail;
    /* Built once here, from the domains just loaded: the request path only copies it out. */
    json_t *doc = openapi_build(g->domains, shared->auth != NULL);
    g->openapi = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!g->openapi) {
        snprintf(err, errlen, "cannot build the OpenAPI document");
        goto fail;
    }
    g->openapi_len = strlen(g->openapi);
    g->pg = pgconn_new(base, cfg->pg_conninfo, on_pg_state, g, err, errlen);
    if (!g->pg)
        goto fail;
    pgconn_set_name(g->pg, "command-gateway");
    const char *tables[] = {"commands"}; /* the only table its prepared statements use */
    g->plans = pgplans_new(base, g->pg, tables, 1,
                           metrics_gauge_get(g->metrics, "gateway_generic_plan_sessions",
                                             "workers whose session with the writer keeps "
                                             "generic plans (the statistics of commands current)",
                                             NULL));
    const char *read_conninfo = *cfg->pg_read_conninfo ? cfg->pg_read_conninfo : cfg->pg_conninfo;
    g->pg_read = pgconn_new(base, read_conninfo, NULL, NULL, err, errlen);
    if (!g->pg_read)
        goto fail;
    pgconn_set_name(g->pg_read, "command-gateway reads");
    pgconn_set_read_only(g->pg_read);
    /* LISTEN where the projector's NOTIFY is committed: a hot standby cannot LISTEN. */
    g->reads_replica = *cfg->pg_read_conninfo != '\0';
    g->readwait = readwait_new(base, cfg->pg_conninfo, err, errlen);
    if (!g->readwait)
        goto fail;
    /* Whatever the HTTP layer takes must fit in a Kafka message, envelope and all. */
    config_props pprops = {0};
    for (size_t i = 0; kafka_props && i < kafka_props->n; i++)
        config_props_set(&pprops, kafka_props->keys[i], kafka_props->values[i]);
    if (sizelimits_settle(cfg->http_max_body, kafka_props, sizelimits_envelope_max(g->domains),
                          &pprops, &g->limits, err, errlen) == 0)
        g->producer = kafka_producer_new(base, &pprops, commands_on_delivery, g, err, errlen);
    config_props_free(&pprops);
    if (!g->producer)
        goto fail;
    /* The replies topic must exist before the process's consumer subscribes to it. */
    const char *topics[] = {g->topic_commands, g->topic_replies};
    char terr[512];
    if (kafka_ensure_topics(g->producer, topics, 2, (int)cfg->topics_partitions,
                            (int)cfg->topics_replication, 10000, terr, sizeof(terr)) != 0) {
        /* Kafka may not be up yet: ask again in the background until it has them, or the
           commands would have no topic for good (a created topic reaches the replies
           subscription at its next metadata refresh). */
        log_kv(LOG_WARN, "could not create the topics", LOG_FIELDS("error", terr));
        g->topics =
            kafka_topics_keeper_new(base, g->producer, topics, 2, (int)cfg->topics_partitions,
                                    (int)cfg->topics_replication);
    }
    g->inbox =
        replies_attach(shared->replies, base, replyroute_on_replies, commands_on_routable, g);
    httpd_options lim = {.max_body = g->limits.max_body + COMMANDS_BODY_GRACE,
                         .max_headers_size = 16384,
                         .timeout_s = (int)cfg->http_timeout_s,
                         .header_timeout_s = (int)cfg->http_header_timeout_s,
                         .body_timeout_s = (int)cfg->http_body_timeout_s,
                         .reuse_port = cfg->workers > 1,
                         .max_connections = (size_t)cfg->http_max_connections};
    g->http =
        httpd_new(base, cfg->http_host, (int)cfg->http_port, &lim, routes_dispatch, g, err, errlen);
    if (!g->http)
        goto fail;
    httpd_set_observer(g->http, on_answer, g);
    httpd_set_conn_observer(g->http, on_conn_event, g);
    LOG_KV(LOG_INFO, "command-gateway listening", LOG_STR("host", cfg->http_host),
           LOG_NUM("port", httpd_port(g->http)));
    return g;
fail:
    gateway_free(g);
    return NULL;
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    gateway *g = arg;
    if (g->live > 0 && ids_monotonic_us() < g->drain_until_us) {
        struct timeval tick = {0, 20000};
        evtimer_add(g->drain, &tick);
        return;
    }
    if (g->live > 0) {
        LOG_KV(LOG_WARN, "drain timed out; requests left unanswered", LOG_NUM("count", g->live));
    }
    /* Give the answers just written a moment to leave before the connections go. */
    struct timeval grace = {0, 200000};
    event_base_loopexit(g->base, &grace);
}

int gateway_port(const gateway *g)
{
    return httpd_port(g->http);
}

void gateway_drain(gateway *g)
{
    g->stopping = true;
    if (g->http)
        httpd_stop_listening(g->http);
    commands_release_parked(g);
    g->drain_until_us = ids_monotonic_us() + g->cfg->drain_timeout_ms * 1000;
    g->drain = evtimer_new(g->base, on_drain_tick, g);
    event_active(g->drain, 0, 0);
}

void gateway_flush(gateway *g)
{
    if (!g->producer || g->flushed)
        return;
    g->flushed = true;
    long long left_ms = g->drain ? (g->drain_until_us - ids_monotonic_us()) / 1000 : 0;
    int wait_ms = left_ms > 1000 ? (int)left_ms : 1000;
    if (kafka_producer_flush(g->producer, wait_ms) != 0) {
        log_warn("shutdown: %d messages were not confirmed by Kafka",
                 kafka_producer_outq_len(g->producer));
        kafka_producer_purge(g->producer); /* their requests get their callbacks */
    }
}

void gateway_free(gateway *g)
{
    if (!g)
        return;
    gateway_flush(g);
    /* Delivery reports served by the flush may still reference parked requests: answer them. */
    commands_release_parked(g);
    accepted_flush(g);
    /* Before the server: queries still queued call back into requests it owns. */
    pgconn_free(g->pg);
    pgplans_free(g->plans); /* after the connection, which may answer its check */
    pgconn_free(g->pg_read);
    readwait_free(g->readwait);
    httpd_free(g->http);
    replies_detach(g->shared->replies, g->inbox);
    kafka_topics_keeper_free(g->topics);
    kafka_producer_free(g->producer);
    domain_registry_free(g->domains);
    strmap_free(g->parked);
    if (g->drain)
        event_free(g->drain);
    if (g->accept_flush_ev)
        event_free(g->accept_flush_ev);
    free(g->accepting);
    free(g->topic_commands);
    free(g->topic_replies);
    free(g->openapi);
    free(g);
}
