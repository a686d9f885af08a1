/*
 * main.c: command-gateway: configuration, one event loop per worker, signals, teardown.
 *
 * Each worker is a replica on a thread of its own: its loop, HTTP listener (the workers share
 * the port through SO_REUSEPORT), PostgreSQL connection and producer. The process has one
 * replies consumer, on the main thread's loop, which hands each reply to the worker whose
 * request waits for it (ADR 0019); besides, only the metrics registry is shared. The main
 * thread also waits for a signal and tells every worker to drain.
 */
#include "core/log.h"
#include "core/service.h"
#include "core/xalloc.h"
#include "gateway.h"
#include "openapi.h"
#include "workers.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct event_base *control = arg;
    log_kv(LOG_INFO, "stopping", LOG_FIELDS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    event_base_loopbreak(control);
}

/* Removes flag from argv if present (it is not a --key=value setting); true if it was. */
static bool take_flag(int *argc, char **argv, const char *flag)
{
    bool found = false;
    int kept = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], flag) == 0)
            found = true;
        else
            argv[kept++] = argv[i];
    }
    argv[kept] = NULL;
    *argc = kept;
    return found;
}

/* Descriptors a worker holds besides its clients (Kafka brokers, PostgreSQL, its loop), and
   those of the process. Generous: running out means failed accepts, not a slower gateway. */
#define FDS_PER_WORKER  64
#define FDS_PER_PROCESS 64

/*
 * http.max_connections is per worker. The file-descriptor limit is raised to its hard bound
 * first; 0 then takes what it leaves, and a value it cannot honour is a start-up error.
 */
static bool size_connections(gateway_config *cfg, char *err, size_t errlen)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(err, errlen, "getrlimit(RLIMIT_NOFILE) failed");
        return false;
    }
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        struct rlimit up = {.rlim_cur = want, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = want;
    }
    long long fds = (long long)rl.rlim_cur;
    long long reserve = FDS_PER_PROCESS + FDS_PER_WORKER * cfg->workers;
    long long per = (fds - reserve) / cfg->workers;
    long long asked = cfg->http_max_connections ? cfg->http_max_connections : 1;
    if (per < asked) {
        snprintf(err, errlen,
                 "http.max_connections: %lld per worker with %lld workers needs %lld file "
                 "descriptors; the limit (ulimit -n) is %lld",
                 asked, cfg->workers, asked * cfg->workers + reserve, fds);
        return false;
    }
    if (cfg->http_max_connections == 0)
        cfg->http_max_connections = per;
    return true;
}

/* --print-openapi: writes the OpenAPI document of schemas.dir's domains to stdout. */
static int print_openapi(const gateway_config *cfg)
{
    char err[512];
    domain_registry *reg = domain_registry_load(cfg->schemas_dir, err, sizeof(err));
    if (!reg) {
        log_kv(LOG_FATAL, "cannot load the domains", LOG_FIELDS("error", err));
        return EXIT_FAILURE;
    }
    json_t *doc = openapi_build(reg, strcmp(cfg->auth_mode, "off") != 0);
    bool ok = doc && json_dumpf(doc, stdout, JSON_INDENT(2)) == 0 && fputc('\n', stdout) != EOF &&
              fflush(stdout) == 0;
    json_decref(doc);
    domain_registry_free(reg);
    if (!ok)
        log_kv(LOG_FATAL, "cannot write the OpenAPI document", NULL);
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    gateway_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;
    bool openapi_only = take_flag(&argc, argv, "--print-openapi");

    if (!service_setup("command-gateway",
                       "Accepts commands over HTTP, publishes them to Kafka and answers with their "
                       "result; serves reads from PostgreSQL.\n--print-openapi writes the OpenAPI "
                       "document of the domains in schemas.dir to stdout and exits.",
                       gateway_config_table, &cfg, &kafka, argc, argv, &rc))
        goto out;
    if (openapi_only) {
        rc = print_openapi(&cfg);
        goto out;
    }
    rc = EXIT_FAILURE;
    if (cfg.workers == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        cfg.workers = cores > 0 ? cores : 1;
    }
    if (!size_connections(&cfg, err, sizeof(err))) {
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    /* Before any thread: loops woken across threads, and jansson's hash seed. */
    if (evthread_use_pthreads() != 0) {
        log_kv(LOG_FATAL, "cannot start", LOG_FIELDS("error", "evthread_use_pthreads failed"));
        goto out;
    }
    json_object_seed(0);

    /* One authenticator for every worker: the key is read once, and checks only read it. */
    auth *authn = NULL;
    if (gateway_auth_new(&cfg, &authn, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    if (!authn)
        log_kv(LOG_WARN, "AUTHENTICATION IS OFF: any client may read and write, all as one tenant",
               LOG_FIELDS("auth.mode", cfg.auth_mode, "tenant", cfg.tenant_default));

    size_t n = (size_t)cfg.workers;
    gateway_shared shared = {.metrics = metrics_new(), .workers = n, .auth = authn};
    shared.replies = replies_new(shared.metrics);
    struct event_base *control = event_base_new();
    if (cfg.ratelimit_rate > 0)
        shared.limit =
            ratelimit_new((double)cfg.ratelimit_rate,
                          (double)(cfg.ratelimit_burst ? cfg.ratelimit_burst : cfg.ratelimit_rate));
    workers *ws = workers_start(n, &cfg, &kafka, &shared, err, sizeof(err));
    char *topic_replies = xasprintf("%sreplies", cfg.topic_prefix);
    /* After the workers: they are attached, and the first has created the topic if missing. */
    if (ws && replies_start(shared.replies, control, &kafka, cfg.replies_group, topic_replies, err,
                            sizeof(err)) != 0) {
        workers_free(ws);
        ws = NULL;
    }
    free(topic_replies);
    if (!ws) {
        log_kv(LOG_FATAL, "cannot start", LOG_FIELDS("error", err));
        replies_free(shared.replies);
        event_base_free(control);
        metrics_free(shared.metrics);
        ratelimit_free(shared.limit);
        auth_free(authn);
        goto out;
    }
    LOG_KV(LOG_INFO, "workers started", LOG_NUM("workers", n),
           LOG_NUM("max_connections_per_worker", cfg.http_max_connections));

    bool started = workers_run(ws);

    struct event *sigint = evsignal_new(control, SIGINT, on_signal, control);
    struct event *sigterm = evsignal_new(control, SIGTERM, on_signal, control);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    if (started)
        event_base_dispatch(control);
    else
        log_kv(LOG_FATAL, "cannot start", LOG_FIELDS("error", "pthread_create failed"));

    workers_stop(ws);
    event_free(sigint);
    event_free(sigterm);
    workers_free(ws);
    replies_free(shared.replies); /* leaves the group; its events are on control */
    event_base_free(control);
    metrics_free(shared.metrics);
    ratelimit_free(shared.limit);
    auth_free(authn);
    log_kv(LOG_INFO, "stopped", NULL);
    rc = started ? EXIT_SUCCESS : EXIT_FAILURE;
out:
    config_free(gateway_config_table, &cfg);
    config_props_free(&kafka);
    return rc;
}
