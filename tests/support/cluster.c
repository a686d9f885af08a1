/* cluster.c: service processes for the multi-process end-to-end tests. */
#include "cluster.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ids.h"
#include "httpc.h"
#include "kafka/kafka.h"
#include "waitfor.h"

#include <event2/event.h>
#include <stdint.h>

int cluster_init(cluster *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    const char *base_ci = getenv("CQRS_TEST_PG_CONNINFO");
    const char *bs = getenv("CQRS_TEST_KAFKA_BOOTSTRAP");
    const char *pgd = getenv("CQRS_TEST_PG_DIR");
    if (!base_ci || !bs || !pgd) {
        fprintf(stderr, "CQRS_TEST_PG_CONNINFO, CQRS_TEST_PG_DIR and CQRS_TEST_KAFKA_BOOTSTRAP "
                        "must be set (make test sets them)\n");
        return -1;
    }
    const char *mode = getenv("CQRS_TEST_KAFKA_MODE");
    c->mock = !mode || strcmp(mode, "real") != 0;
    snprintf(c->pg_dir, sizeof(c->pg_dir), "%s", pgd);
    const char *pp = strstr(base_ci, "port=");
    c->pg_port = pp ? atoi(pp + 5) : 0;
    snprintf(c->bootstrap, sizeof(c->bootstrap), "%s", bs);
    snprintf(c->prefix, sizeof(c->prefix), "%s%d-", name, (int)getpid());
    snprintf(c->dir, sizeof(c->dir), "/tmp/cqrs-%s-XXXXXX", name);
    if (!mkdtemp(c->dir)) {
        perror("mkdtemp");
        return -1;
    }
    char dbname[64], sql[128];
    snprintf(dbname, sizeof(dbname), "%s_%d", name, (int)getpid());
    PGconn *admin = PQconnectdb(base_ci);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    PGresult *res = PQexec(admin, sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "%s", PQerrorMessage(admin));
    PQclear(res);
    PQfinish(admin);
    const char *sdir = getenv("CQRS_TEST_PG_STANDBY_DIR");
    const char *sport = getenv("CQRS_TEST_PG_STANDBY_PORT");
    if (sdir && *sdir && sport && atoi(sport) > 0) {
        snprintf(c->standby_dir, sizeof(c->standby_dir), "%s", sdir);
        c->standby_port = atoi(sport);
        /* Either server may be the primary: libpq tries both and takes the writable one. */
        snprintf(c->conninfo, sizeof(c->conninfo),
                 "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=%s "
                 "target_session_attrs=read-write",
                 c->pg_port, c->standby_port, dbname);
    } else {
        snprintf(c->conninfo, sizeof(c->conninfo), "%s dbname=%s", base_ci, dbname);
    }
    return ok ? 0 : -1;
}

pid_t cluster_start(const cluster *c, const char *service, int idx, const char *const *extra)
{
    const char *build = getenv("CQRS_BUILD") ? getenv("CQRS_BUILD") : "build";
    char bin[300], log[400], a[6][600];
    bool projector = strcmp(service, "projector") == 0; /* state-processor project */
    snprintf(bin, sizeof(bin), "%s/%s", build, projector ? "state-processor" : service);
    snprintf(log, sizeof(log), "%s/%s-%d.log", c->dir, service, idx);
    snprintf(a[0], sizeof(a[0]), "--pg.conninfo=%s", c->conninfo);
    snprintf(a[1], sizeof(a[1]), "--kafka.bootstrap.servers=%s", c->bootstrap);
    snprintf(a[2], sizeof(a[2]), "--topic.prefix=%s", c->prefix);
    /* The mock cluster holds each fetch for the full fetch.wait.max.ms, and ends a rebalance
       only when the session timeout expires; a broker does neither. */
    snprintf(a[3], sizeof(a[3]), "--kafka.fetch.wait.max.ms=%s", c->mock ? "5" : "500");
    snprintf(a[5], sizeof(a[5]), "--kafka.session.timeout.ms=%s", c->mock ? "6000" : "45000");
    if (projector)
        snprintf(a[4], sizeof(a[4]), "--projector.group=%sprojector", c->prefix);
    else if (strcmp(service, "state-processor") == 0)
        snprintf(a[4], sizeof(a[4]), "--group.id=%sprocessors", c->prefix);
    else
        snprintf(a[4], sizeof(a[4]), "--replies.group=%sgateways", c->prefix);
    const char *argv[40] = {projector ? "state-processor" : service};
    size_t n = 1;
    if (projector)
        argv[n++] = "project";
    for (size_t i = 0; i < 6; i++)
        argv[n++] = a[i];
    if (strcmp(service, "command-gateway") == 0)
        argv[n++] = "--auth.mode=off"; /* a test that wants it on says so in extra */
    for (size_t i = 0; extra && extra[i] && n < 39; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static bool readyz_200(void *arg)
{
    httpc_response r = httpc_request(*(int *)arg, "GET", "/readyz", NULL, NULL, 1000);
    bool ready = r.status == 200;
    httpc_free(&r);
    return ready;
}

bool cluster_wait_ready(int port, int timeout_ms)
{
    return waitfor(readyz_200, &port, timeout_ms);
}

/* Runs deploy/local/pg.sh with the arguments given; 0, or -1 after a message. */
static int pg_sh(const char *args)
{
    const char *repo = getenv("CQRS_REPO");
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "'%s/deploy/local/pg.sh' %s >/dev/null 2>&1", repo ? repo : ".",
             args);
    if (system(cmd) != 0) {
        fprintf(stderr, "failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

int cluster_pg(const cluster *c, const char *how)
{
    char args[400];
    if (strcmp(how, "start") == 0)
        snprintf(args, sizeof(args), "start '%s' %d", c->pg_dir, c->pg_port);
    else
        snprintf(args, sizeof(args), "stop '%s' %s", c->pg_dir,
                 strcmp(how, "kill") == 0 ? "immediate" : "fast");
    return pg_sh(args);
}

typedef struct catch_up {
    PGconn *standby;
    char lsn[64]; /* the primary's flushed WAL position before the kill */
} catch_up;

static bool standby_has_lsn(void *arg)
{
    catch_up *cu = arg;
    const char *params[1] = {cu->lsn};
    PGresult *r =
        PQexecParams(cu->standby, "SELECT coalesce(pg_last_wal_receive_lsn() >= $1::pg_lsn, false)",
                     1, NULL, params, NULL, NULL, 0);
    bool has = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
               strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return has;
}

/*
 * Waits until the standby has received everything the primary had flushed when asked, as an HA
 * manager promotes only a standby that is in step: a primary restarted after a crash makes
 * visible, without waiting for any standby, the commits its crash left in doubt, and a standby
 * that has not reconnected since lacks them. 0 when in step, -1 after a message.
 */
static int standby_catch_up(const cluster *c, int timeout_ms)
{
    char ci[200];
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5", c->pg_port);
    PGconn *primary = PQconnectdb(ci);
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5",
             c->standby_port);
    catch_up cu = {.standby = PQconnectdb(ci)};
    PGresult *r = PQexec(primary, "SELECT pg_current_wal_flush_lsn()");
    bool asked = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (asked)
        snprintf(cu.lsn, sizeof(cu.lsn), "%s", PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "cluster_pg_failover: the primary's WAL position: %s",
                PQerrorMessage(primary));
    PQclear(r);
    bool in_step = asked && waitfor(standby_has_lsn, &cu, timeout_ms);
    if (asked && !in_step)
        fprintf(stderr, "cluster_pg_failover: the standby has not received %s after %d ms: %s\n",
                cu.lsn, timeout_ms, PQerrorMessage(cu.standby));
    PQfinish(cu.standby);
    PQfinish(primary);
    return in_step ? 0 : -1;
}

int cluster_pg_failover(cluster *c, long long *killed_us, long long *promoted_us)
{
    if (c->standby_port == 0) {
        fprintf(stderr, "cluster_pg_failover: no standby\n");
        return -1;
    }
    if (standby_catch_up(c, 30000) != 0)
        return -1;
    char args[700];
    if (killed_us)
        *killed_us = ids_monotonic_us();
    snprintf(args, sizeof(args), "kill '%s'", c->pg_dir);
    if (pg_sh(args) != 0)
        return -1;
    snprintf(args, sizeof(args), "promote '%s'", c->standby_dir);
    if (pg_sh(args) != 0)
        return -1;
    if (promoted_us)
        *promoted_us = ids_monotonic_us();
    char dir[sizeof(c->pg_dir)];
    int port = c->pg_port;
    snprintf(dir, sizeof(dir), "%s", c->pg_dir);
    snprintf(c->pg_dir, sizeof(c->pg_dir), "%s", c->standby_dir);
    c->pg_port = c->standby_port;
    snprintf(c->standby_dir, sizeof(c->standby_dir), "%s", dir);
    c->standby_port = port;
    /* The old primary's port may linger for a moment after the kill: pg.sh fails, try again. */
    int rc = -1;
    for (int i = 0; i < 5 && rc != 0; i++) {
        snprintf(args, sizeof(args), "standby '%s' %d %d", c->standby_dir, c->standby_port,
                 c->pg_port);
        rc = pg_sh(args);
        if (rc != 0)
            usleep(500 * 1000);
    }
    if (rc != 0)
        return -1;
    snprintf(args, sizeof(args), "sync '%s' '*'", c->pg_dir);
    return pg_sh(args);
}

size_t cluster_read_events(const cluster *c, strmap *ids, size_t want, int idle_ms, size_t *copies)
{
    struct event_base *base = event_base_new();
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", c->bootstrap);
    char err[512], group[80], topic[64];
    static int reads; /* a fresh group for every read, so each starts at the beginning */
    snprintf(group, sizeof(group), "%sevent-check-%d", c->prefix, reads++);
    snprintf(topic, sizeof(topic), "%sevents", c->prefix);
    kafka_consumer *k =
        kafka_consumer_new(base, &props, group, topic, NULL, NULL, NULL, err, sizeof(err));
    size_t distinct = 0, n_read = 0;
    strmap *seen = ids ? ids : strmap_new();
    kafka_message msgs[500];
    for (int idle = 0; k && idle < idle_ms && strmap_size(seen) < want;) {
        size_t n = kafka_consumer_poll(k, msgs, 500);
        for (size_t i = 0; i < n; i++) {
            for (size_t h = 0; h < msgs[i].nheaders; h++) {
                if (strcmp(msgs[i].headers[h].name, "ce_id") != 0)
                    continue;
                char id[300];
                snprintf(id, sizeof(id), "%.*s", (int)msgs[i].headers[h].len,
                         msgs[i].headers[h].value);
                uintptr_t had = (uintptr_t)strmap_get(seen, id);
                strmap_put(seen, id, (void *)(had + 1));
            }
        }
        n_read += n;
        idle = n ? 0 : idle + 50;
        if (n == 0) {
            struct timeval tv = {0, 50000};
            event_base_loopexit(base, &tv);
            event_base_dispatch(base);
        }
    }
    if (!k)
        fprintf(stderr, "cannot read %s: %s\n", topic, err);
    distinct = strmap_size(seen);
    if (!ids)
        strmap_free(seen);
    if (k)
        kafka_consumer_free(k);
    config_props_free(&props);
    event_base_free(base);
    if (copies)
        *copies = n_read;
    return distinct;
}

bool cluster_finish(cluster *c, const pid_t *pids, size_t n, bool failed)
{
    for (size_t i = 0; i < n; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGCONT); /* a test may have left one stopped */
            kill(pids[i], SIGTERM);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (pids[i] > 0)
            waitpid(pids[i], NULL, 0);
    }
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             failed ? "tail -n 30 %s/*.log >&2"
                    : "grep -A30 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' %s/*.log >&2",
             c->dir);
    int grep_rc = system(cmd);
    if (!failed && grep_rc == 0) {
        fprintf(stderr, "a sanitizer reported an error in a service log\n");
        failed = true;
    }
    const char *keep = getenv("CQRS_KEEP_TEST_DIR");
    if (failed || (keep && strcmp(keep, "1") == 0)) {
        fprintf(stderr, "service logs kept in %s\n", c->dir);
    } else {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", c->dir);
    }
    return failed;
}
