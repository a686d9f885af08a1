/*
 * test_replicas.c: two gateway replicas (two workers each) and two processors, as separate
 * processes. Every sync client gets its own answer whichever replica it reaches; a stalled
 * processor turns sync requests into 202 at their deadline; more waiting requests than the bound
 * get 503 with Retry-After; oversized bodies and slow clients are cut off; and a replica killed
 * with SIGKILL loses nothing: its clients retry on the other replica with the same key and get
 * the original outcome.
 */
#include "checkrun.h"
#include "cluster.h"
#include "httpc.h"
#include "core/ids.h"
#include "pgtest.h"
#include "stack.h"
#include "waitfor.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PARKED 50 /* per worker; two workers per replica */
#define TIMEOUT_MS 20000

static cluster cl;
static pid_t procs[2], gateways[3]; /* the third only for the memory test */
static int ports[2];
static PGconn *db;

static httpc_response post(int port, const char *headers, const char *body)
{
    return httpc_request(port, "POST", "/v1/commands", headers, body, TIMEOUT_MS);
}

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

/* Follows a command resource until it is decided; returns its http_status, or 0. */
static int decided_status(int port, const char *command_id)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/commands/%s", command_id);
    for (int i = 0; i < 300; i++) {
        httpc_response s = httpc_request(port, "GET", path, NULL, NULL, TIMEOUT_MS);
        const char *st = s.status == 200 ? jstr(s.json, "status") : "";
        int code = strcmp(st, "applied") == 0 || strcmp(st, "rejected") == 0
                       ? (int)json_integer_value(json_object_get(s.json, "http_status"))
                       : 0;
        httpc_free(&s);
        if (code)
            return code;
        usleep(100000);
    }
    return 0;
}

/* Opens an account; a 202 (a rebalance moved the reply away) is followed until decided. */
static void open_account(const char *id)
{
    char body[160];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             id);
    httpc_response r = post(ports[0], NULL, body);
    int status = r.status;
    if (status == 202)
        status = decided_status(ports[0], jstr(r.json, "command_id"));
    httpc_free(&r);
    ck_assert_msg(status == 201, "open %s: %d", id, status);
}

/* ---- every client gets its own answer ---- */

#define ROUTE_THREADS 16
#define ROUTE_EACH    25

typedef struct answer {
    int status;
    char key[32];
    char account[16];
    char command_id[40];
    char answered_account[16];
    char answered_key[32];
} answer;

static answer answers[ROUTE_THREADS][ROUTE_EACH];

static void *route_client(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < ROUTE_EACH; i++) {
        answer *a = &answers[t][i];
        snprintf(a->key, sizeof(a->key), "route-%d-%d", t, i);
        snprintf(a->account, sizeof(a->account), "route-%d", (t + i) % 8);
        char headers[96], body[160];
        snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n", a->key);
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.deposit\",\"aggregate_id\":\"%s\",\"payload\":"
                 "{\"amount\":1}}",
                 a->account);
        httpc_response r = post(ports[(t + i) % 2], headers, body);
        a->status = r.status;
        snprintf(a->command_id, sizeof(a->command_id), "%s", jstr(r.json, "command_id"));
        snprintf(a->answered_account, sizeof(a->answered_account), "%s",
                 jstr(r.json, "aggregate_id"));
        snprintf(a->answered_key, sizeof(a->answered_key), "%s", jstr(r.json, "idempotency_key"));
        httpc_free(&r);
    }
    return NULL;
}

START_TEST(every_client_gets_its_own_answer)
{
    for (int a = 0; a < 8; a++) {
        char id[32];
        snprintf(id, sizeof(id), "route-%d", a);
        open_account(id);
    }
    pthread_t th[ROUTE_THREADS];
    for (int t = 0; t < ROUTE_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, route_client, (void *)(intptr_t)t), 0);
    for (int t = 0; t < ROUTE_THREADS; t++)
        pthread_join(th[t], NULL);
    int ok = 0;
    for (int t = 0; t < ROUTE_THREADS; t++) {
        for (int i = 0; i < ROUTE_EACH; i++) {
            const answer *a = &answers[t][i];
            /* A reply reaches the replica and the request that sent the command, or none. */
            ck_assert_msg(a->status == 200, "%s: status %d", a->key, a->status);
            ck_assert_str_eq(a->answered_key, a->key);
            ck_assert_str_eq(a->answered_account, a->account);
            char sql[256];
            snprintf(sql, sizeof(sql),
                     "SELECT count(*) FROM commands WHERE id = '%s' AND idempotency_key = '%s' "
                     "AND aggregate_id = '%s' AND status = 'applied'",
                     a->command_id, a->key, a->account);
            ck_assert_int_eq(pgtest_int(db, sql), 1);
            ok++;
        }
    }
    ck_assert_int_eq(pgtest_int(db, "SELECT sum((state->>'balance')::int) FROM aggregates WHERE "
                                    "id LIKE 'route-%'"),
                     ok);
    fprintf(stderr, "routing: %d sync answers across 2 replicas x 2 workers, all their own\n", ok);
}
END_TEST

/* ---- a stalled processor: 202 at the deadline, applied later ---- */

static void processors_signal(int sig)
{
    kill(procs[0], sig);
    kill(procs[1], sig);
}

START_TEST(deadline_gives_202_then_applied)
{
    open_account("late");
    processors_signal(SIGSTOP);
    httpc_response r = post(ports[1], "Prefer: wait=1\r\n",
                            "{\"type\":\"account.deposit\",\"aggregate_id\":\"late\","
                            "\"payload\":{\"amount\":7}}");
    processors_signal(SIGCONT);
    ck_assert_int_eq(r.status, 202);
    char loc[128];
    ck_assert_ptr_nonnull(httpc_header(&r, "Location", loc, sizeof(loc)));
    char id[40];
    snprintf(id, sizeof(id), "%s", jstr(r.json, "command_id"));
    ck_assert_str_eq(loc + strlen("/v1/commands/"), id);
    httpc_free(&r);
    ck_assert_int_eq(decided_status(ports[0], id), 200);
}
END_TEST

/* ---- overload: beyond the parked bound, 503 with Retry-After ---- */

#define OVERLOAD 160

static int overload_status[OVERLOAD];
static char overload_retry_after[OVERLOAD][8];
static char overload_id[OVERLOAD][40];

static void *overload_client(void *arg)
{
    int i = (int)(intptr_t)arg;
    char body[160];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.deposit\",\"aggregate_id\":\"busy\",\"payload\":{\"amount\":1}}");
    httpc_response r = post(ports[0], "Prefer: wait=4\r\n", body);
    overload_status[i] = r.status;
    httpc_header(&r, "Retry-After", overload_retry_after[i], sizeof(overload_retry_after[i]));
    snprintf(overload_id[i], sizeof(overload_id[i]), "%s", jstr(r.json, "command_id"));
    httpc_free(&r);
    return NULL;
}

START_TEST(overload_gets_503_and_loses_nothing)
{
    open_account("busy");
    processors_signal(SIGSTOP); /* nothing is answered: every sync request stays parked */
    pthread_t th[OVERLOAD];
    for (int i = 0; i < OVERLOAD; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, overload_client, (void *)(intptr_t)i), 0);
    for (int i = 0; i < OVERLOAD; i++)
        pthread_join(th[i], NULL);
    processors_signal(SIGCONT);
    int accepted = 0, refused = 0;
    for (int i = 0; i < OVERLOAD; i++) {
        if (overload_status[i] == 503) {
            /* A full waiting room empties within sync.timeout_ms (5 s here), plus the jitter's
               half again at most (docs/api.md, Retry-After). */
            int ra = atoi(overload_retry_after[i]);
            ck_assert_msg(ra >= 5 && ra <= 8, "client %d: Retry-After %s", i,
                          overload_retry_after[i]);
            refused++;
        } else {
            ck_assert_msg(overload_status[i] == 202, "client %d: %d", i, overload_status[i]);
            accepted++;
        }
    }
    /* Two workers park at most MAX_PARKED each; the rest is refused at once. */
    ck_assert_int_le(accepted, 2L * MAX_PARKED);
    ck_assert_int_ge(refused, OVERLOAD - 2L * MAX_PARKED);
    for (int i = 0; i < OVERLOAD; i++) {
        if (overload_status[i] == 202)
            ck_assert_int_eq(decided_status(ports[0], overload_id[i]), 200);
    }
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT (state->>'balance')::int FROM aggregates WHERE id = 'busy'");
    ck_assert_int_eq(pgtest_int(db, sql), accepted);
    httpc_response h = httpc_request(ports[0], "GET", "/healthz", NULL, NULL, TIMEOUT_MS);
    ck_assert_int_eq(h.status, 200);
    httpc_free(&h);
    fprintf(stderr, "overload: %d requests, %d parked then 202, %d x 503\n", OVERLOAD, accepted,
            refused);
}
END_TEST

/* ---- hostile clients ---- */

/* A blocking connection whose reads give up after timeout_s. */
static int connect_to(int port, int timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* The status of the answer waiting on fd. */
/* Reads the start of an answer into buf (NUL-terminated); returns its status, or 0. */
static int read_answer(int fd, char *buf, size_t len)
{
    ssize_t got;
    do
        got = read(fd, buf, len - 1);
    while (got < 0 && errno == EINTR);
    if (got < 12) {
        fprintf(stderr, "read_answer: read %zd (%s)\n", got, got < 0 ? strerror(errno) : "short");
        buf[0] = '\0';
        return 0;
    }
    buf[got] = '\0';
    return atoi(buf + 9); /* "HTTP/1.1 200" */
}

static int read_status(int fd)
{
    char buf[256];
    return read_answer(fd, buf, sizeof(buf));
}

START_TEST(oversize_body_is_413)
{
    /* Announced larger than http.max_body (1 MiB): refused before the body is read. */
    int fd = connect_to(ports[0], 10);
    const char *head = "POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: 2097152\r\n\r\n{";
    ck_assert_int_eq(write(fd, head, strlen(head)), (ssize_t)strlen(head));
    ck_assert_int_eq(read_status(fd), 413);
    close(fd);
}
END_TEST

START_TEST(oversize_headers_are_refused)
{
    /* A 20 KiB header block against the 16 KiB limit: an error answer, and the replica lives. */
    size_t n = (size_t)20 * 1024;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    char *headers = malloc(n + 32);
    snprintf(headers, n + 32, "X-Big: %s\r\n", big);
    httpc_response r = httpc_request(ports[1], "GET", "/healthz", headers, NULL, TIMEOUT_MS);
    free(big);
    free(headers);
    ck_assert_msg(r.status == 400 || r.status == 431, "status %d", r.status);
    httpc_free(&r);
    httpc_response h = httpc_request(ports[1], "GET", "/healthz", NULL, NULL, TIMEOUT_MS);
    ck_assert_int_eq(h.status, 200);
    httpc_free(&h);
}
END_TEST

START_TEST(slow_client_is_cut_off)
{
    /* Half a request line, then silence: the 1 s timeout closes the connection. */
    int fd = connect_to(ports[1], 10);
    const char *part = "POST /v1/commands HTTP/1.1\r\nHost: x\r\n";
    ck_assert_int_eq(write(fd, part, strlen(part)), (ssize_t)strlen(part));
    char buf[512];
    long long start = ids_monotonic_us() / 1000;
    ssize_t got;
    while ((got = read(fd, buf, sizeof(buf))) > 0)
        ;
    long long waited = ids_monotonic_us() / 1000 - start;
    close(fd);
    ck_assert_int_eq(got, 0); /* closed by the server, not our receive timeout */
    ck_assert_int_lt(waited, 5000);
    /* The replica still serves. */
    httpc_response h = httpc_request(ports[1], "GET", "/healthz", NULL, NULL, TIMEOUT_MS);
    ck_assert_int_eq(h.status, 200);
    httpc_free(&h);
}
END_TEST

/* ---- a cap on connections ---- */

#define CAP 16

/* Stops the extra gateway (gateways[2]); its exit status, or -1 when none runs. */
static int stop_extra(void)
{
    int rc = -1;
    if (gateways[2] > 0) {
        kill(gateways[2], SIGTERM);
        waitpid(gateways[2], &rc, 0);
    }
    gateways[2] = 0;
    return rc;
}

/* Starts a test's extra gateway; one that a failed test left running is stopped first. */
static pid_t start_extra(int index, const char *const *extra)
{
    stop_extra();
    return gateways[2] = cluster_start(&cl, "command-gateway", index, extra);
}

/*
 * One worker with http.max_connections=16. With 15 idle connections open, the metrics request
 * is the 16th. With 16 idle, a 17th connects (the kernel's backlog holds it) but is not
 * served until one of the 16 closes; then it is. Every connection is counted out at the end.
 */
START_TEST(connections_are_capped)
{
    int port = stack_free_port();
    char flag_port[32], flag_cap[48], flag_group[80];
    snprintf(flag_port, sizeof(flag_port), "--http.port=%d", port);
    snprintf(flag_cap, sizeof(flag_cap), "--http.max_connections=%d", CAP);
    snprintf(flag_group, sizeof(flag_group), "--replies.group=%scap", cl.prefix);
    const char *extra[] = {flag_port, flag_cap, flag_group, "--workers=1", NULL};
    start_extra(5, extra);
    ck_assert(cluster_wait_ready(port, 60000));
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_http_connections", 1, 5000), 1);

    int idle[CAP];
    for (int i = 0; i < CAP - 1; i++)
        idle[i] = connect_to(port, 10);
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_http_connections", CAP, 5000), CAP);
    idle[CAP - 1] = connect_to(port, 10);

    int waiting = connect_to(port, 1);
    const char *get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(write(waiting, get, strlen(get)), (ssize_t)strlen(get));
    char buf[64];
    ssize_t got = read(waiting, buf, sizeof(buf)); /* gives up after 1 s */
    ck_assert_msg(got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                  "served beyond the cap: read %zd", got);
    close(idle[0]);
    struct timeval tv = {10, 0};
    setsockopt(waiting, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ck_assert_int_eq(read_status(waiting), 200);
    close(waiting);

    ck_assert_int_ge(httpc_metric(port, "gateway_http_accept_paused_total"), 1);
    for (int i = 1; i < CAP; i++)
        close(idle[i]);
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_http_connections", 1, 5000), 1);
    int rc = stop_extra();
    ck_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
}
END_TEST

/*
 * A cap the file-descriptor limit cannot honour stops the start, naming the key: as many
 * connections as the hard limit leaves no room for the worker's own descriptors.
 */
START_TEST(impossible_cap_is_a_startup_error)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max > 1000000) { /* beyond the key's range: lower it (for good, still ample) */
        rl.rlim_max = 1000000;
        if (rl.rlim_cur > rl.rlim_max)
            rl.rlim_cur = rl.rlim_max;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    char flag_cap[48], want[80];
    snprintf(flag_cap, sizeof(flag_cap), "--http.max_connections=%llu",
             (unsigned long long)rl.rlim_max);
    snprintf(want, sizeof(want), "http.max_connections: %llu per worker",
             (unsigned long long)rl.rlim_max);
    const char *extra[] = {"--http.port=0", flag_cap, "--workers=1", NULL};
    pid_t gw = cluster_start(&cl, "command-gateway", 6, extra);
    int rc = -1;
    waitpid(gw, &rc, 0);
    ck_assert(WIFEXITED(rc) && WEXITSTATUS(rc) != 0);
    char path[320], line[1024];
    snprintf(path, sizeof(path), "%s/command-gateway-6.log", cl.dir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    bool named = false;
    while (fgets(line, sizeof(line), f))
        named = named || strstr(line, want);
    fclose(f);
    ck_assert_msg(named, "no start-up error naming http.max_connections in %s", path);
}
END_TEST

/*
 * Polls GET /healthz until 200, for up to 60 s: a gateway whose Kafka cannot be reached is alive
 * (though not ready) once its start-up has waited for Kafka's metadata and given up.
 */
static bool wait_alive(int port)
{
    for (int i = 0; i < 600; i++) {
        httpc_response h = httpc_request(port, "GET", "/healthz", NULL, NULL, 1000);
        bool up = h.status == 200;
        httpc_free(&h);
        if (up)
            return true;
        usleep(100000);
    }
    return false;
}

/* ---- Kafka unreachable: a bounded producer queue, then 503 at once ---- */

#define QUEUE_REQS 6

static int queue_status[QUEUE_REQS];
static char queue_detail[QUEUE_REQS][80];
static char queue_retry_after[QUEUE_REQS][8];
static int queue_port;

static void *queue_client(void *arg)
{
    int i = (int)(intptr_t)arg;
    httpc_response r = post(queue_port, "Prefer: respond-async, wait=3\r\n",
                            "{\"type\":\"account.deposit\",\"aggregate_id\":\"q\","
                            "\"payload\":{\"amount\":1}}");
    queue_status[i] = r.status;
    snprintf(queue_detail[i], sizeof(queue_detail[i]), "%s", jstr(r.json, "detail"));
    httpc_header(&r, "Retry-After", queue_retry_after[i], sizeof(queue_retry_after[i]));
    httpc_free(&r);
    return NULL;
}

/*
 * A gateway whose Kafka cannot be reached, with room for 2 messages in its producer queue: the
 * first 2 requests wait for a confirmation that does not come and get 503 at their deadline; the
 * others find the queue full and get 503 at once. None hangs, and the process lives.
 */
START_TEST(full_producer_queue_gets_503)
{
    queue_port = stack_free_port();
    char flag_port[32];
    snprintf(flag_port, sizeof(flag_port), "--http.port=%d", queue_port);
    const char *extra[] = {flag_port,
                           "--workers=1",
                           "--kafka.bootstrap.servers=127.0.0.1:1",
                           "--kafka.queue.buffering.max.messages=2",
                           "--log.level=error",
                           NULL};
    long long started_us = ids_monotonic_us();
    start_extra(3, extra);
    ck_assert(wait_alive(queue_port));
    pthread_t th[QUEUE_REQS];
    for (int i = 0; i < QUEUE_REQS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, queue_client, (void *)(intptr_t)i), 0);
    for (int i = 0; i < QUEUE_REQS; i++)
        pthread_join(th[i], NULL);
    /* Kafka has been gone since the gateway's start: at most 1 s plus 1 s each 2 s of that, and
       up to half again of jitter. */
    long long gone_s = (ids_monotonic_us() - started_us) / 1000000;
    int most = (int)(1 + gone_s / 2);
    most += most / 2;
    int full = 0;
    for (int i = 0; i < QUEUE_REQS; i++) {
        ck_assert_msg(queue_status[i] == 503, "request %d: %d", i, queue_status[i]);
        int ra = atoi(queue_retry_after[i]);
        ck_assert_msg(ra >= 1 && ra <= most, "request %d: Retry-After %s after %lld s of outage", i,
                      queue_retry_after[i], gone_s);
        full += strstr(queue_detail[i], "queue is full") != NULL;
    }
    ck_assert_int_eq(full, QUEUE_REQS - 2);
    httpc_response h = httpc_request(queue_port, "GET", "/healthz", NULL, NULL, TIMEOUT_MS);
    ck_assert_int_eq(h.status, 200);
    httpc_free(&h);
    stop_extra();
}
END_TEST

/* ---- a command Kafka did not take releases its key ---- */

static int count_key(const char *key)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM commands WHERE idempotency_key = '%s'", key);
    return (int)pgtest_int(db, sql);
}

static int open_with_key(int port, const char *key, const char *prefer, const char *account,
                         char *detail, size_t detail_len)
{
    char headers[160], body[160];
    snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\nPrefer: %s\r\n", key, prefer);
    snprintf(body, sizeof(body),
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             account);
    httpc_response r = post(port, headers, body);
    int status = r.status;
    if (detail)
        snprintf(detail, detail_len, "%s", jstr(r.json, "detail"));
    httpc_free(&r);
    return status;
}

/*
 * A gateway whose Kafka cannot be reached, with a 1.5 s message timeout: the delivery report
 * says the command was never written, so the key's claim is released, whether the request is
 * still waiting (answered 503 once released) or was answered 503 at its deadline before. A
 * retry with the same key is then a new attempt, not 409 (the claim would otherwise stand for
 * idempotency.inflight_timeout_s, 60 s here), and on a healthy replica it is applied once.
 */
START_TEST(an_undelivered_command_releases_its_key)
{
    int port = stack_free_port();
    char flag_port[32], detail[160];
    snprintf(flag_port, sizeof(flag_port), "--http.port=%d", port);
    const char *extra[] = {flag_port,
                           "--workers=1",
                           "--kafka.bootstrap.servers=127.0.0.1:1",
                           "--kafka.message.timeout.ms=1500",
                           "--sync.timeout_ms=1000", /* Kafka's confirmation gets 1 s at least */
                           "--idempotency.inflight_timeout_s=60",
                           "--log.level=warn",
                           NULL};
    start_extra(4, extra);
    ck_assert(wait_alive(port));
    /* The report comes a variable time after the 1.5 s message timeout (librdkafka scans for
       timed-out messages now and then, later on a loaded machine): a request may still be
       waiting then (released, then answered "did not take") or have been answered at its 1 s
       deadline before ("not confirmed in time", released when the report comes). Either way
       the claim goes, and the same key then starts a new attempt instead of getting 409. */
    const char *keys[] = {"undelivered-1", "undelivered-1", "undelivered-2"};
    for (size_t i = 0; i < 3; i++) {
        int st = open_with_key(port, keys[i], "wait=1", keys[i], detail, sizeof(detail));
        ck_assert_msg(st == 503, "attempt %zu: %d", i, st);
        ck_assert_msg(strstr(detail, "did not take the command") ||
                          strstr(detail, "not confirmed in time"),
                      "attempt %zu: %s", i, detail);
        for (int w = 0; w < 600 && count_key(keys[i]) != 0; w++)
            usleep(100000);
        ck_assert_msg(count_key(keys[i]) == 0, "attempt %zu: the claim was not released in 60 s",
                      i);
    }
    stop_extra();
    /* The retries, on a healthy replica: each key applied once. */
    ck_assert_int_eq(open_with_key(ports[0], "undelivered-1", "wait=10", "undelivered-1", NULL, 0),
                     201);
    ck_assert_int_eq(open_with_key(ports[1], "undelivered-2", "wait=10", "undelivered-2", NULL, 0),
                     201);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM commands WHERE idempotency_key LIKE "
                                    "'undelivered-%' AND status = 'applied'"),
                     2);
}
END_TEST

/* ---- memory with many parked requests ---- */

#define PARKED 10000
#define EXTRA  200

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    }
    if (f)
        fclose(f);
    return kib;
}

/* Sends one sync deposit on a new connection and leaves the answer unread. */
static int send_parked(int port, int i)
{
    int fd = connect_to(port, 45); /* the answer may take the whole 30 s deadline */
    char body[128], req[512];
    int blen = snprintf(body, sizeof(body),
                        "{\"type\":\"account.deposit\",\"aggregate_id\":\"mem-%d\",\"payload\":"
                        "{\"amount\":1}}",
                        i % 100);
    int len = snprintf(req, sizeof(req),
                       "POST /v1/commands HTTP/1.1\r\nHost: x\r\nPrefer: wait=30\r\n"
                       "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                       blen, body);
    ck_assert_int_eq(write(fd, req, (size_t)len), len);
    return fd;
}

/*
 * 10,000 sync requests parked on one worker (the processors are stopped, so none is answered),
 * then 200 more beyond its bound: those get 503 at once, and the memory held per parked request
 * stays small. Measured figures go to docs/running-locally.md.
 */
START_TEST(parked_requests_memory_is_bounded)
{
    int port = stack_free_port();
    char flag_port[32], flag_parked[48];
    snprintf(flag_port, sizeof(flag_port), "--http.port=%d", port);
    snprintf(flag_parked, sizeof(flag_parked), "--sync.max_parked=%d", PARKED);
    /* A replies group of its own: on the mock cluster the replies topic has 4 partitions, which
       the 4 workers of the replicas already own. Replies to the others are dropped here. */
    char flag_group[80];
    snprintf(flag_group, sizeof(flag_group), "--replies.group=%smemory", cl.prefix);
    const char *extra[] = {flag_port, flag_parked, flag_group, "--workers=1", NULL};
    pid_t gw = start_extra(2, extra);
    ck_assert(cluster_wait_ready(port, 60000));
    for (int a = 0; a < 100; a++) {
        char id[32];
        snprintf(id, sizeof(id), "mem-%d", a);
        open_account(id);
    }
    long before = rss_kib(gw);
    processors_signal(SIGSTOP);
    static int fds[PARKED];
    for (int i = 0; i < PARKED; i++)
        fds[i] = send_parked(port, i);
    long long parked = httpc_metric_reaches(port, "gateway_parked_requests", PARKED, 60000);
    if (parked < PARKED) { /* the requests beyond would park too, each for its 30 s */
        long long open = httpc_metric(port, "gateway_http_connections");
        long long produced = httpc_metric(port, "gateway_commands_produced_total");
        processors_signal(SIGCONT);
        for (int i = 0; i < PARKED; i++)
            close(fds[i]);
        ck_abort_msg("only %lld of %d requests parked within 60 s (%lld connections open, %lld "
                     "commands produced)",
                     parked, PARKED, open, produced);
    }
    long during = rss_kib(gw);
    int refused = 0;
    for (int i = 0; i < EXTRA; i++) {
        int fd = send_parked(port, i);
        refused += read_status(fd) == 503;
        close(fd);
    }
    processors_signal(SIGCONT);
    int answered = 0, other = 0;
    for (int i = 0; i < PARKED; i++) {
        int st = read_status(fds[i]);
        answered += st == 200 || st == 202;
        if (st != 200 && st != 202 && other++ < 5)
            fprintf(stderr, "parked request %d: status %d\n", i, st);
        close(fds[i]);
    }
    long after = rss_kib(gw);
    stop_extra();
    fprintf(stderr,
            "parked: %lld requests parked; gateway RSS %ld KiB before, %ld KiB with them parked "
            "(%.1f KiB each), %ld KiB after; %d of %d beyond the bound got 503; %d answered\n",
            parked, before, during, (double)(during - before) / PARKED, after, refused, EXTRA,
            answered);
    ck_assert_int_eq(parked, PARKED);
    ck_assert_int_eq(refused, EXTRA);
    ck_assert_int_eq(answered, PARKED);
    /* Under 32 KiB per parked request: about 5 in a normal build, 14 under AddressSanitizer. */
    ck_assert_int_lt(during - before, PARKED * 32L);
}
END_TEST

/* A client that leaves while its request is parked frees the slot at once. */
START_TEST(disconnected_client_frees_its_slot)
{
    processors_signal(SIGSTOP);
    int fd = send_parked(ports[0], 0);
    long long parked = httpc_metric_becomes(ports[0], "gateway_parked_requests", 1, 5000);
    close(fd);
    long long after = httpc_metric_becomes(ports[0], "gateway_parked_requests", 0, 5000);
    processors_signal(SIGCONT);
    ck_assert_int_eq(parked, 1);
    ck_assert_int_eq(after, 0);
}
END_TEST

/* ---- a replica killed under load ---- */

#define KILL_THREADS 12

typedef struct kill_req {
    char key[32];
    int account;
    int first_status; /* answer of the replica first asked; 0 when the connection broke */
    int first_port;
    int final_status; /* the outcome the client ends with */
    char command_id[40];
} kill_req;

static kill_req kill_reqs[KILL_THREADS][400];
static atomic_int kill_count[KILL_THREADS];
static atomic_bool kill_stop;
static atomic_bool replica0_dead;

static void *kill_client(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < 400 && !atomic_load(&kill_stop); i++) {
        kill_req *k = &kill_reqs[t][i];
        snprintf(k->key, sizeof(k->key), "kill-%d-%d", t, i);
        k->account = t;
        char headers[96], body[160];
        snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n", k->key);
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.deposit\",\"aggregate_id\":\"kill-%d\",\"payload\":"
                 "{\"amount\":1}}",
                 t);
        /* Replica 0 first while it lives; after a broken connection, replica 1, same key. */
        k->first_port = atomic_load(&replica0_dead) ? ports[1] : ports[i % 2];
        httpc_response r = post(k->first_port, headers, body);
        k->first_status = r.status;
        int status = r.status;
        snprintf(k->command_id, sizeof(k->command_id), "%s", jstr(r.json, "command_id"));
        httpc_free(&r);
        for (int tries = 0; (status == 0 || status == 409) && tries < 200; tries++) {
            if (status == 409)
                usleep(100000);
            r = post(ports[1], headers, body);
            status = r.status;
            if (*jstr(r.json, "command_id"))
                snprintf(k->command_id, sizeof(k->command_id), "%s", jstr(r.json, "command_id"));
            httpc_free(&r);
        }
        /* A 202 is followed once the run is over (the processors may be stopped now): a client
           that waited here would send nothing more, and nothing would be waiting on replica 0
           when it is killed. */
        k->final_status = status;
        kill_count[t] = i + 1;
    }
    return NULL;
}

/* Requests answered so far, over every client. */
static int kill_done(void)
{
    int n = 0;
    for (int t = 0; t < KILL_THREADS; t++)
        n += atomic_load(&kill_count[t]);
    return n;
}

static bool kill_done_at_least(void *arg)
{
    return kill_done() >= *(const int *)arg;
}

/* Waits (up to timeout_ms) until the kill test's clients have n answers between them. */
static void kill_done_reaches(int n, int timeout_ms)
{
    waitfor(kill_done_at_least, &n, timeout_ms);
}

START_TEST(killed_replica_loses_nothing)
{
    for (int t = 0; t < KILL_THREADS; t++) {
        char id[32];
        snprintf(id, sizeof(id), "kill-%d", t);
        open_account(id);
    }
    pthread_t th[KILL_THREADS];
    for (int t = 0; t < KILL_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, kill_client, (void *)(intptr_t)t), 0);
    /* Requests in flight on replica 0 when it dies: with the processors stopped, the sync
       requests it took wait there. No assertion while the processors are stopped. */
    kill_done_reaches(KILL_THREADS, TIMEOUT_MS); /* answers coming: the pipeline works */
    int before_stop = kill_done();
    processors_signal(SIGSTOP);
    long long waiting =
        httpc_metric_reaches(ports[0], "gateway_commands_unanswered", KILL_THREADS / 4, TIMEOUT_MS);
    kill(gateways[0], SIGKILL);
    waitpid(gateways[0], NULL, 0);
    gateways[0] = 0;
    atomic_store(&replica0_dead, true);
    processors_signal(SIGCONT);
    ck_assert_msg(waiting >= KILL_THREADS / 4,
                  "%lld requests waiting on replica 0 (%lld on replica 1) after %d answers",
                  waiting, httpc_metric(ports[1], "gateway_commands_unanswered"), before_stop);
    /* Every client goes on with replica 1: some more commands each, then stop. */
    int after_kill = kill_done();
    kill_done_reaches(after_kill + 4 * KILL_THREADS, 60000);
    atomic_store(&kill_stop, true);
    for (int t = 0; t < KILL_THREADS; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < KILL_THREADS; t++) {
        for (int i = 0; i < kill_count[t]; i++) {
            kill_req *k = &kill_reqs[t][i];
            if (k->final_status == 202)
                k->final_status = decided_status(ports[1], k->command_id);
        }
    }

    int total = 0, first_2xx = 0, broken = 0;
    for (int t = 0; t < KILL_THREADS; t++) {
        for (int i = 0; i < kill_count[t]; i++) {
            const kill_req *k = &kill_reqs[t][i];
            total++;
            broken += k->first_status == 0;
            first_2xx += k->first_status == 200 || k->first_status == 202;
            /* Every client ends with the outcome of its one command. */
            ck_assert_msg(k->final_status == 200, "%s: first %d, final %d", k->key, k->first_status,
                          k->final_status);
            char sql[320];
            snprintf(
                sql, sizeof(sql),
                "SELECT count(*) FROM commands WHERE idempotency_key = '%.31s' AND id = '%.39s' "
                "AND status = 'applied'",
                k->key, k->command_id);
            ck_assert_int_eq(pgtest_int(db, sql), 1);
        }
        /* Applied exactly once each: the balance counts the requests. */
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "SELECT (state->>'balance')::int FROM aggregates WHERE id = 'kill-%d'", t);
        ck_assert_int_eq(pgtest_int(db, sql), kill_count[t]);
    }
    /* The requests waiting on replica 0 lost their connection and were retried on replica 1. */
    ck_assert_msg(broken >= KILL_THREADS / 4, "%d connections broken by the kill", broken);
    ck_assert_int_gt(first_2xx, 0);
    fprintf(stderr,
            "replica killed: %d commands, %d answered 2xx first, %d connections broken and "
            "retried on the other replica; all applied once\n",
            total, first_2xx, broken);
}
END_TEST

/*
 * SIGTERM: a request still waiting is answered 202 (its command is in Kafka), once the gateway
 * has recorded it: its Location answers while no processor has the command yet (ADR 0041).
 */
START_TEST(sigterm_answers_parked_with_202)
{
    ck_assert_int_gt(gateways[1], 0);
    processors_signal(SIGSTOP); /* the request stays parked until the replica stops */
    int fd = send_parked(ports[1], 0);
    ck_assert_int_eq(httpc_metric_becomes(ports[1], "gateway_parked_requests", 1, 5000), 1);
    kill(gateways[1], SIGTERM);
    char head[2048], recorded[256] = "SELECT 0";
    int status = read_answer(fd, head, sizeof(head));
    close(fd);
    const char *loc = strstr(head, "\r\nLocation: /v1/commands/");
    if (loc) /* the id: the 36 characters after the path */
        snprintf(recorded, sizeof(recorded),
                 "SELECT count(*) FROM commands WHERE id = '%.36s' AND status = 'accepted'",
                 loc + strlen("\r\nLocation: /v1/commands/"));
    long long records = pgtest_int(db, recorded); /* the processors are still stopped */
    int rc = -1;
    waitpid(gateways[1], &rc, 0);
    gateways[1] = 0;
    processors_signal(SIGCONT);
    ck_assert_int_eq(status, 202);
    ck_assert_msg(loc != NULL, "no Location in the 202: %s", head);
    ck_assert_int_eq(records, 1);
    ck_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
}
END_TEST

int main(void)
{
    if (cluster_init(&cl, "replicas") != 0)
        return EXIT_FAILURE;
    for (int i = 0; i < 2; i++) {
        procs[i] = cluster_start(&cl, "state-processor", i, NULL);
        ports[i] = stack_free_port();
    }
    for (int i = 0; i < 2; i++) {
        char port[32], parked[48];
        snprintf(port, sizeof(port), "--http.port=%d", ports[i]);
        snprintf(parked, sizeof(parked), "--sync.max_parked=%d", MAX_PARKED);
        /* A claim left by the killed replica is taken over after 2 s. */
        const char *extra[] = {port,
                               parked,
                               "--workers=2",
                               "--http.timeout_s=1",
                               "--topics.partitions=8",
                               "--idempotency.inflight_timeout_s=2",
                               NULL};
        gateways[i] = cluster_start(&cl, "command-gateway", i, extra);
    }
    int failed = 1;
    if (cluster_wait_ready(ports[0], 60000) && cluster_wait_ready(ports[1], 60000)) {
        db = PQconnectdb(cl.conninfo);
        Suite *s = suite_create("replicas");
        TCase *tc = tcase_create("replicas");
        tcase_set_timeout(tc, 240);
        tcase_add_test(tc, every_client_gets_its_own_answer);
        tcase_add_test(tc, deadline_gives_202_then_applied);
        tcase_add_test(tc, overload_gets_503_and_loses_nothing);
        tcase_add_test(tc, oversize_body_is_413);
        tcase_add_test(tc, oversize_headers_are_refused);
        tcase_add_test(tc, slow_client_is_cut_off);
        tcase_add_test(tc, connections_are_capped);
        tcase_add_test(tc, impossible_cap_is_a_startup_error);
        tcase_add_test(tc, full_producer_queue_gets_503);
        tcase_add_test(tc, an_undelivered_command_releases_its_key);
        tcase_add_test(tc, parked_requests_memory_is_bounded);
        tcase_add_test(tc, disconnected_client_frees_its_slot);
        tcase_add_test(tc, killed_replica_loses_nothing);
        tcase_add_test(tc, sigterm_answers_parked_with_202);
        suite_add_tcase(s, tc);
        failed = check_run(s, CK_NOFORK); /* the services are this process's children */
        PQfinish(db);
    } else {
        fprintf(stderr, "the services were not ready within 60 s\n");
    }
    pid_t all[] = {procs[0], procs[1], gateways[0], gateways[1], gateways[2]};
    return cluster_finish(&cl, all, 5, failed) ? EXIT_FAILURE : EXIT_SUCCESS;
}
