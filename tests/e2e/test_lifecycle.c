/*
 * test_lifecycle.c: the whole system across a restart with its data kept, as a user of
 * `make run` sees it: stopped with SIGINT and started again in the same folder. PostgreSQL keeps
 * what it holds; run.sh's mock cluster is a new, empty one (on the real broker the log stays).
 * Every command answered 2xx after the restart must be applied, none left `accepted`. And a
 * service killed under `make run` is started again by run.sh, and what a run.sh killed with
 * SIGKILL left running is stopped by the next one, losing nothing either way.
 */
#include "checkrun.h"
#include "httpc.h"
#include "stack.h"
#include "waitfor.h"

#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static stack st;

#define TIMEOUT_MS   15000
#define BEFORE       10    /* sync commands before the restart */
#define LAST         200   /* async commands just before it: the stop must not lose them */
#define CLIENTS      8     /* client threads of the async bursts */
#define AFTER        40    /* async commands after it */
#define KILLED       200   /* async commands just before the processor is killed */
#define SETTLE_TRIES 600   /* polls, 100 ms apart, for the async ones to be decided */
#define SETTLE_MS    60000 /* for a set of async commands to be applied */

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static httpc_response open_account(const char *id, bool async)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             id);
    return httpc_request(st.http_port, "POST", "/v1/commands",
                         async ? "Prefer: respond-async\r\n" : NULL, body, TIMEOUT_MS);
}

/* A share of the async opens, sent by one client thread. */
typedef struct share {
    const char *tag;
    int from, to;
    char (*ids)[64];
    int *statuses;
} share;

static void *send_share(void *arg)
{
    const share *sh = arg;
    for (int i = sh->from; i < sh->to; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s-%d", sh->tag, i);
        httpc_response r = open_account(id, true);
        sh->statuses[i] = r.status;
        snprintf(sh->ids[i], sizeof(sh->ids[i]), "%s", jstr(r.json, "command_id"));
        httpc_free(&r);
    }
    return NULL;
}

/* Sends n async account.open for <tag>-<i> from CLIENTS threads at once (faster than one
   processor applies them); each must be answered 202; their command ids into ids. */
static void open_async(const char *tag, int n, char (*ids)[64])
{
    int *statuses = calloc((size_t)n, sizeof(int));
    pthread_t th[CLIENTS];
    share sh[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        sh[c] = (share){tag, n * c / CLIENTS, n * (c + 1) / CLIENTS, ids, statuses};
        pthread_create(&th[c], NULL, send_share, &sh[c]);
    }
    for (int c = 0; c < CLIENTS; c++)
        pthread_join(th[c], NULL);
    for (int i = 0; i < n; i++)
        ck_assert_msg(statuses[i] == 202, "%s-%d: %d", tag, i, statuses[i]);
    free(statuses);
}

/* The status of command id as GET /v1/commands/{id} gives it, in out. */
static void command_status(const char *id, char *out, size_t len)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/commands/%s", id);
    httpc_response r = httpc_request(st.http_port, "GET", path, NULL, NULL, TIMEOUT_MS);
    snprintf(out, len, "%d %s", r.status, r.status == 200 ? jstr(r.json, "status") : "");
    httpc_free(&r);
}

/* A set of commands waited for until each is applied (a final status: each is asked until it is).
 */
typedef struct settling {
    const char *tag;
    char (*ids)[64];
    int n;
    bool *applied;
    int pending;
    char last[160]; /* one not applied yet, for the message */
} settling;

static bool all_applied(void *arg)
{
    settling *s = arg;
    s->pending = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->applied[i])
            continue;
        char status[64];
        command_status(s->ids[i], status, sizeof(status));
        s->applied[i] = strcmp(status, "200 applied") == 0;
        if (!s->applied[i]) {
            s->pending++;
            snprintf(s->last, sizeof(s->last), "%s-%d: %s", s->tag, i, status);
        }
    }
    return s->pending == 0;
}

/* Asserts that every command of ids is applied within SETTLE_MS. */
static void expect_applied(const char *tag, char (*ids)[64], int n)
{
    settling s = {.tag = tag, .ids = ids, .n = n, .applied = calloc((size_t)n, sizeof(bool))};
    bool done = waitfor(all_applied, &s, SETTLE_MS);
    free(s.applied);
    ck_assert_msg(done, "%d of %d commands not applied after %d ms (e.g. %s)", s.pending, n,
                  SETTLE_MS, s.last);
}

/* The lines of run.sh's log that contain needle. */
static int run_log_lines(const char *needle)
{
    char log[400];
    snprintf(log, sizeof(log), "%s/run.sh.log", st.run_dir);
    return file_lines_mentioning(log, needle);
}

/* run.sh said the system is up more times than *arg (its services all ready). */
static bool says_the_system_is_up(void *arg)
{
    return run_log_lines("the system is up") > *(const int *)arg;
}

static bool processor_started_again(void *arg)
{
    pid_t now = stack_processor_pid(&st);
    return now > 0 && now != *(const pid_t *)arg;
}

/*
 * kill -9 of the processor while the commands just accepted wait for it, and more come while it
 * is gone: run.sh starts it again (stopping the stack would take the mock cluster and those
 * commands with it), and every command answered 202 is applied. run.sh keeps running.
 */
START_TEST(a_killed_processor_is_started_again_and_loses_nothing)
{
    /* Up as run.sh sees it (all of its services ready): a service that exits while run.sh
       starts them stops the stack, as a bad configuration would. */
    int never = 0;
    ck_assert_msg(waitfor(says_the_system_is_up, &never, 30000),
                  "run.sh did not say the system is up");
    pid_t killed = stack_processor_pid(&st);
    ck_assert_int_gt(killed, 0);
    static char ids[KILLED][64], more[AFTER][64];
    open_async("killed", KILLED, ids);
    ck_assert_int_eq(kill(killed, SIGKILL), 0);
    open_async("while", AFTER, more);
    ck_assert_msg(waitfor(processor_started_again, &killed, 10000),
                  "the processor was not started again");
    expect_applied("killed", ids, KILLED);
    expect_applied("while", more, AFTER);
    ck_assert_int_eq(waitpid(st.pid, NULL, WNOHANG), 0); /* run.sh still runs */
}
END_TEST

/*
 * run.sh killed with SIGKILL, its services still running with commands accepted and not all
 * applied: the next run.sh in the folder stops them as the killed one's cleanup would have (the
 * processor given the time to apply what was accepted) and comes up on the same ports, and
 * every command answered 202 is applied. Before, it failed: its port was in use.
 */
START_TEST(a_killed_run_sh_is_cleaned_up_by_the_next_one)
{
    static char ids[KILLED][64];
    open_async("orphaned", KILLED, ids);
    int ups = run_log_lines("the system is up");
    ck_assert_int_eq(kill(st.pid, SIGKILL), 0);
    waitpid(st.pid, NULL, 0);
    st.pid = 0;
    /* Its gateway still answers /readyz: the new run.sh is up once it says so. */
    ck_assert_msg(stack_restart(&st) == 0, "the stack did not come back");
    ck_assert_msg(waitfor(says_the_system_is_up, &ups, SETTLE_MS),
                  "the next run.sh did not come up");
    ck_assert_int_eq(run_log_lines("was killed without stopping its services"), 1);
    expect_applied("orphaned", ids, KILLED);
}
END_TEST

START_TEST(a_restart_with_the_data_kept_loses_nothing)
{
    for (int i = 0; i < BEFORE; i++) {
        char id[32];
        snprintf(id, sizeof(id), "before-%d", i);
        httpc_response r = open_account(id, false);
        ck_assert_msg(r.status == 201, "%s: %d %s", id, r.status, r.body ? r.body : "");
        httpc_free(&r);
    }
    static char last_ids[LAST][64];
    open_async("last", LAST, last_ids);
    int status = stack_stop(&st); /* at once: some are not applied yet */
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run.sh status %d", status);
    ck_assert_msg(stack_restart(&st) == 0, "the stack did not come back");

    /* Those answered 202 before the stop were applied before it: none stays accepted. */
    for (int i = 0; i < LAST; i++) {
        char s[64];
        command_status(last_ids[i], s, sizeof(s));
        ck_assert_msg(strcmp(s, "200 applied") == 0, "last-%d, answered 202 before the stop: %s", i,
                      s);
    }

    static char ids[AFTER][64];
    open_async("after", AFTER, ids);
    /* Each one is decided, and applied: a new account each. */
    expect_applied("after", ids, AFTER);
    /* What was applied before the restart can still be read: its events reached the new log
       too (the outbox produces them again), so the projections hold every account. */
    for (int i = 0; i < BEFORE + AFTER; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/v1/aggregates/account/%s-%d",
                 i < BEFORE ? "before" : "after", i < BEFORE ? i : i - BEFORE);
        int got = 0;
        for (int tries = 0; tries < SETTLE_TRIES && got != 200; tries++) {
            httpc_response r = httpc_request(st.http_port, "GET", path, NULL, NULL, TIMEOUT_MS);
            got = r.status;
            if (got == 200)
                ck_assert_int_eq(json_integer_value(json_object_get(r.json, "version")), 1);
            httpc_free(&r);
            if (got != 200)
                usleep(100000);
        }
        ck_assert_msg(got == 200, "%s: %d after 60 s", path, got);
    }
}
END_TEST

int main(void)
{
    if (stack_start(&st, false) != 0) {
        stack_stop(&st);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("lifecycle");
    TCase *tc = tcase_create("restart");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_killed_processor_is_started_again_and_loses_nothing);
    tcase_add_test(tc, a_killed_run_sh_is_cleaned_up_by_the_next_one);
    tcase_add_test(tc, a_restart_with_the_data_kept_loses_nothing);
    suite_add_tcase(s, tc);
    /* In this process: the test stops and starts run.sh, whose parent it must be. */
    int failed = check_run(s, CK_NOFORK);
    if (failed)
        stack_show_logs(&st);
    stack_stop(&st);
    if (!failed && stack_logs_clean(&st))
        stack_remove(&st);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
