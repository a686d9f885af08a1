/*
 * test_readiness.c: a gateway answers sync requests with their result whenever it can, and says
 * it is ready only when it can. More workers than reply partitions all answer 201; a sync request
 * that comes before the gateway can route replies waits for that instead of getting 202 at once;
 * and `make run` (deploy/local/run.sh) says "up" only once every service is ready.
 */
#include "checkrun.h"
#include "cluster.h"
#include "httpc.h"
#include "core/ids.h"
#include "stack.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLIENT_TIMEOUT_MS 40000

static cluster cl;
static pid_t procs[4]; /* a processor, then the gateways of the test that runs */

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

/* Opens account id with a sync request on a new connection; returns the status. */
static int open_account(int port, const char *id, const char *prefer)
{
    char body[160], headers[64] = "";
    snprintf(body, sizeof(body),
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             id);
    if (prefer)
        snprintf(headers, sizeof(headers), "Prefer: %s\r\n", prefer);
    httpc_response r =
        httpc_request(port, "POST", "/v1/commands", headers, body, CLIENT_TIMEOUT_MS);
    int status = r.status;
    if (status != 201)
        fprintf(stderr, "open %s: %d %s\n", id, status, jstr(r.json, "detail"));
    httpc_free(&r);
    return status;
}

static int readyz(int port)
{
    httpc_response r = httpc_request(port, "GET", "/readyz", NULL, NULL, 2000);
    int status = r.status;
    httpc_free(&r);
    return status;
}

/* Polls /healthz until 200, for up to 60 s. */
static bool wait_alive(int port)
{
    for (int i = 0; i < 600; i++) {
        httpc_response h = httpc_request(port, "GET", "/healthz", NULL, NULL, 1000);
        bool up = h.status == 200;
        httpc_free(&h);
        if (up)
            return true;
        usleep(20000);
    }
    return false;
}

static void stop(int idx)
{
    if (procs[idx] > 0) {
        kill(procs[idx], SIGTERM);
        waitpid(procs[idx], NULL, 0);
        procs[idx] = 0;
    }
}

static pid_t start_gateway(int idx, int port, const char *group, const char *workers)
{
    char flag_port[32], flag_group[96];
    snprintf(flag_port, sizeof(flag_port), "--http.port=%d", port);
    snprintf(flag_group, sizeof(flag_group), "--replies.group=%s%s", cl.prefix, group);
    const char *extra[] = {flag_port, flag_group, workers, "--topics.partitions=4", NULL};
    stop(idx); /* left by a test that failed */
    return procs[idx] = cluster_start(&cl, "command-gateway", idx, extra);
}

/*
 * Six workers, four reply partitions: the process is ready, and every sync request gets its
 * result whichever worker the kernel hands its connection to (each request is a connection of
 * its own, spread over the workers by SO_REUSEPORT).
 */
START_TEST(more_workers_than_reply_partitions)
{
    int port = stack_free_port();
    start_gateway(1, port, "six", "--workers=6");
    ck_assert_msg(cluster_wait_ready(port, 60000),
                  "a gateway with more workers than reply partitions never became ready");
    for (int i = 0; i < 60; i++) {
        char id[32];
        snprintf(id, sizeof(id), "six-%d", i);
        ck_assert_int_eq(open_account(port, id, "wait=20"), 201);
    }
    stop(1);
}
END_TEST

/*
 * A gateway that joins a replies group another replica holds owns no partition until the
 * rebalance is over. A sync request it gets meanwhile waits for that and is answered with its
 * result, not 202.
 */
START_TEST(sync_request_before_ready_waits)
{
    int port_a = stack_free_port(), port_b = stack_free_port();
    start_gateway(1, port_a, "early", "--workers=1");
    ck_assert(cluster_wait_ready(port_a, 60000));
    start_gateway(2, port_b, "early", "--workers=2");
    ck_assert(wait_alive(port_b));
    ck_assert_msg(readyz(port_b) == 503, "the joining gateway was ready at once: nothing to test");
    long long t0 = ids_monotonic_us();
    ck_assert_int_eq(open_account(port_b, "early-1", "wait=30"), 201);
    long long waited_ms = (ids_monotonic_us() - t0) / 1000;
    fprintf(stderr, "a sync request sent before ready: 201 after %lld ms\n", waited_ms);
    ck_assert_int_eq(readyz(port_b), 200);
    stop(2);
    stop(1);
}
END_TEST

/* The line run.sh prints once the system is up. */
#define UP_LINE "run.sh: the system is up"

/*
 * `make run`: once run.sh says the system is up, the gateway is ready and the first sync
 * command gets its result (201), not 202 after its 5 s wait.
 */
START_TEST(run_sh_up_means_ready)
{
    stack st;
    ck_assert_int_eq(stack_launch(&st, false), 0);
    char log[320];
    snprintf(log, sizeof(log), "%s/run.sh.log", st.run_dir);
    bool up = false;
    for (int i = 0; i < 1800 && !up; i++) { /* 180 s: PostgreSQL's initdb, then the services */
        up = file_mentions(log, UP_LINE);
        if (!up && waitpid(st.pid, NULL, WNOHANG) == st.pid) {
            st.pid = 0;
            break;
        }
        if (!up)
            usleep(100000);
    }
    if (!up)
        stack_show_logs(&st);
    ck_assert_msg(up, "run.sh did not say the system is up");
    int ready = readyz(st.http_port);
    int opened = open_account(st.http_port, "first", NULL);
    int stopped = stack_stop(&st);
    if (ready != 200 || opened != 201 || stopped != 0)
        stack_show_logs(&st);
    else
        stack_remove(&st);
    ck_assert_int_eq(ready, 200);
    ck_assert_int_eq(opened, 201);
    ck_assert_int_eq(stopped, 0);
}
END_TEST

int main(void)
{
    if (cluster_init(&cl, "readiness") != 0)
        return EXIT_FAILURE;
    const char *extra[] = {"--topics.partitions=4", NULL};
    procs[0] = cluster_start(&cl, "state-processor", 0, extra);
    Suite *s = suite_create("readiness");
    TCase *tc = tcase_create("gateway");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, more_workers_than_reply_partitions);
    tcase_add_test(tc, sync_request_before_ready_waits);
    suite_add_tcase(s, tc);
    TCase *run = tcase_create("run_sh");
    tcase_set_timeout(run, 300);
    tcase_add_test(run, run_sh_up_means_ready);
    suite_add_tcase(s, run);
    int failed = check_run(s, CK_NOFORK); /* the services are this process's children */
    return cluster_finish(&cl, procs, 4, failed) ? EXIT_FAILURE : EXIT_SUCCESS;
}
