/*
 * test_rebuild.c: the operator tools `state-processor rebuild` and `state-processor lag`, run
 * through their command line (fork/exec, output to files: not a terminal) against the whole
 * system (deploy/local/run.sh: processor, projector, gateway) while it keeps running: a rebuild
 * under concurrent writes and HTTP reads, with the swap held up by a reader's lock so that reads
 * demonstrably wait across it; dry runs before and after tampering; a rebuild from a time; lag
 * against consumer_offsets and the number of messages produced; SIGINT; --help and bad keys.
 */
#include "checkrun.h"
#include "core/rfc3339.h"
#include "httpc.h"
#include "core/ids.h"
#include "ops/lagcmd.h"
#include "pgtest.h"
#include "ops/rebuild/rebuild.h"
#include "stack.h"
#include "waitfor.h"

#include <check.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 15000
#define WAIT_MS    60000

static stack st;
static char prefix[40]; /* the stack's topic and group prefix */

/* ---- HTTP ---- */

static int post(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int post(const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    httpc_response r = httpc_request(st.http_port, "POST", "/v1/commands", NULL, body, TIMEOUT_MS);
    int status = r.status;
    httpc_free(&r);
    return status;
}

static void open_account(const char *id, int deposit)
{
    ck_assert_int_eq(post("{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":"
                          "{\"owner\":\"owner-%s\"}}",
                          id, id),
                     201);
    if (deposit > 0)
        ck_assert_int_eq(post("{\"type\":\"account.deposit\",\"aggregate_id\":\"%s\","
                              "\"payload\":{\"amount\":%d}}",
                              id, deposit),
                         200);
}

/* ---- SQL ---- */

static PGconn *db_open(void)
{
    PGconn *db = PQconnectdb(st.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    return db;
}

static void exec_ok(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
}

/* First column of the first row as text, copied into buf. */
static const char *q_text(PGconn *db, const char *sql, char *buf, size_t len)
{
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    snprintf(buf, len, "%s", PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return buf;
}

/* Every command decided, every event published and projected by the stack's projector. */
static bool caught_up(PGconn *db)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = "
             "'%sprojector'",
             prefix);
    for (int waited = 0; waited < WAIT_MS; waited += 100) {
        if (pgtest_int(db, "SELECT count(*) FROM commands WHERE status = 'accepted'") == 0 &&
            pgtest_int(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0 &&
            pgtest_int(db, sql) >= pgtest_int(db, "SELECT count(*) FROM outbox"))
            return true;
        usleep(100000);
    }
    return false;
}

/* The rows as the write model has them: the same checksum from projection and aggregates. */
#define ROWS_MD5(from)                                                                             \
    "SELECT md5(COALESCE(string_agg(concat_ws('|', tenant, id, version, COALESCE(state::text, "    \
    "'null'), deleted), ',' ORDER BY tenant, id), '')) FROM " from

/* Declared columns that are not the value the state holds. */
static const char bad_columns_sql[] =
    "SELECT count(*) FROM projection_account WHERE owner IS DISTINCT FROM (CASE WHEN "
    "jsonb_typeof(state->'owner') = 'string' THEN state->>'owner' END) OR status IS DISTINCT FROM "
    "(CASE WHEN jsonb_typeof(state->'status') = 'string' THEN state->>'status' END) OR balance IS "
    "DISTINCT FROM (CASE WHEN jsonb_typeof(state->'balance') = 'number' THEN "
    "(state->>'balance')::numeric::bigint END)";

static void assert_projection_equals_aggregates(PGconn *db)
{
    char a[64], b[64];
    q_text(db, ROWS_MD5("projection_account"), a, sizeof a);
    q_text(db, ROWS_MD5("aggregates WHERE type = 'account'"), b, sizeof b);
    ck_assert_str_eq(a, b);
    ck_assert_int_eq(pgtest_int(db, bad_columns_sql), 0);
    ck_assert_int_gt(pgtest_int(db, "SELECT count(*) FROM projection_account"), 0);
}

/* ---- the tools, through their command line ---- */

typedef struct tool {
    pid_t pid;
    char out[400], err[400]; /* stdout and stderr: files, not a terminal */
} tool;

/* Starts build/state-processor <sub> with the stack's connection settings and extra flags. */
static void tool_start(tool *t, const char *sub, const char *const *extra)
{
    static int seq;
    memset(t, 0, sizeof(*t));
    snprintf(t->out, sizeof t->out, "%s/%s-%d.out", st.run_dir, sub, ++seq);
    snprintf(t->err, sizeof t->err, "%s/%s-%d.err", st.run_dir, sub, seq);
    char bin[512], pg[400], kafka[400], pre[80], group[120];
    const char *build = getenv("CQRS_BUILD") ? getenv("CQRS_BUILD") : "build";
    snprintf(bin, sizeof bin, "%s/state-processor", build);
    snprintf(pg, sizeof pg, "--pg.conninfo=%s", st.conninfo);
    snprintf(kafka, sizeof kafka, "--kafka.bootstrap.servers=%s", st.bootstrap);
    snprintf(pre, sizeof pre, "--topic.prefix=%s", prefix);
    snprintf(group, sizeof group, "--group.id=%sstate-processor", prefix);
    const char *argv[24] = {bin, sub, pg, kafka, pre};
    size_t n = 5;
    if (strcmp(sub, "lag") == 0)
        argv[n++] = group;
    if (!st.real_kafka)
        argv[n++] = "--kafka.fetch.wait.max.ms=5"; /* the mock holds fetches that long */
    for (size_t i = 0; extra && extra[i] && n < 23; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    /* Opened here, so that they exist as soon as this returns. */
    int o = open(t->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(t->err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(o >= 0 && e >= 0);
    t->pid = fork();
    if (t->pid == 0) {
        dup2(o, 1);
        dup2(e, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(o);
    close(e);
    ck_assert_int_gt(t->pid, 0);
}

/* Waits for the exit status (128 + signal when killed); fails after timeout_ms. */
static int tool_wait(tool *t, int timeout_ms)
{
    int status = 0;
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (waitpid(t->pid, &status, WNOHANG) == t->pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(20000);
    }
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    ck_abort_msg("state-processor did not exit within %d ms (%s)", timeout_ms, t->err);
    return -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s", path);
    size_t cap = 1 << 16, len = 0;
    char *s = malloc(cap);
    size_t got;
    while ((got = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *bigger = realloc(s, cap *= 2);
            ck_assert_ptr_nonnull(bigger);
            s = bigger;
        }
    }
    s[len] = '\0';
    fclose(f);
    return s;
}

/* The JSON objects of the file's lines whose "type" is type (every line must parse). */
static json_t *json_lines(const char *path, const char *type)
{
    char *text = slurp(path);
    json_t *out = json_array();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        ck_assert_msg(json_is_object(j), "%s: not a JSON line: %s (%s)", path, line, e.text);
        const char *t = json_string_value(json_object_get(j, "type"));
        if (!type || (t && strcmp(t, type) == 0))
            json_array_append(out, j);
        json_decref(j);
    }
    free(text);
    return out;
}

/* Runs the tool to its end; returns its one result object (stdout), checking the exit status. */
static json_t *tool_run(const char *sub, const char *const *extra, int want_status)
{
    tool t;
    tool_start(&t, sub, extra);
    int rc = tool_wait(&t, WAIT_MS);
    if (rc != want_status) {
        char *err = slurp(t.err);
        ck_abort_msg("%s exited %d, not %d:\n%s", sub, rc, want_status, err);
    }
    json_t *lines = json_lines(t.out, NULL);
    ck_assert_int_eq(json_array_size(lines), 1);
    json_t *res = json_incref(json_array_get(lines, 0));
    json_decref(lines);
    return res;
}

static long long jint(const json_t *j, const char *key)
{
    const json_t *v = json_object_get(j, key);
    ck_assert_msg(json_is_integer(v), "no integer %s in %s", key, json_dumps(j, 0));
    return json_integer_value(v);
}

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static long long differences(const json_t *res)
{
    return jint(json_object_get(res, "differences"), "total");
}

/* Waits until the tool's stderr holds a progress line of the given phase. */
static bool wait_phase(const tool *t, const char *phase)
{
    char want[64];
    snprintf(want, sizeof want, "\"phase\":\"%s\"", phase);
    for (int waited = 0; waited < WAIT_MS; waited += 20) {
        char *text = slurp(t->err);
        bool seen = strstr(text, want) != NULL;
        free(text);
        if (seen)
            return true;
        if (waitpid(t->pid, NULL, WNOHANG) == t->pid)
            return false;
        usleep(20000);
    }
    return false;
}

/* ---- concurrent writers and readers ---- */

/*
 * Each test starts from the whole pipeline at rest and a projection equal to the aggregates,
 * whatever ran before it: a test that failed half-way may have left rows tampered or a command
 * undecided; a rebuild puts the projection back.
 */
static void at_rest(void)
{
    PGconn *db = db_open();
    exec_ok(db, "DELETE FROM commands WHERE idempotency_key = 'lag-orphan'");
    ck_assert(caught_up(db));
    char live[64], model[64];
    q_text(db, ROWS_MD5("projection_account"), live, sizeof live);
    q_text(db, ROWS_MD5("aggregates WHERE type = 'account'"), model, sizeof model);
    if (strcmp(live, model) != 0 || pgtest_int(db, bad_columns_sql) != 0) {
        const char *full[] = {"--type=account", NULL};
        json_decref(tool_run("rebuild", full, 0));
    }
    PQfinish(db);
}

static atomic_bool running;
static atomic_int writes_ok, reads_ok, reads_failed, reads_after, last_bad_status;
static atomic_llong max_read_ms;
static atomic_bool swapped_flag;

static bool writes_reach(void *arg)
{
    return atomic_load(&writes_ok) >= *(const int *)arg;
}

/* Four reads after the swap, and writes up to *arg. */
static bool traffic_after_swap(void *arg)
{
    return atomic_load(&reads_after) >= 4 && writes_reach(arg);
}

static void *writer(void *arg)
{
    (void)arg;
    for (int n = 0; atomic_load(&running); n++) {
        int s = n % 4 == 0 ? post("{\"type\":\"account.open\",\"aggregate_id\":\"rbw-%d\","
                                  "\"payload\":{\"owner\":\"w\"}}",
                                  n)
                           : post("{\"type\":\"account.deposit\",\"aggregate_id\":\"rb-%03d\","
                                  "\"payload\":{\"amount\":1}}",
                                  n % 150);
        if (s == 200 || s == 201)
            atomic_fetch_add(&writes_ok, 1);
    }
    return NULL;
}

static void *reader(void *arg)
{
    for (int n = (int)(intptr_t)arg; atomic_load(&running); n++) {
        char path[96];
        if (n % 5 == 0)
            snprintf(path, sizeof path, "/v1/aggregates/account?owner=owner-rb-%03d", n % 150);
        else
            snprintf(path, sizeof path, "/v1/aggregates/account/rb-%03d", n % 150);
        long long t0 = ids_monotonic_ms();
        httpc_response r = httpc_request(st.http_port, "GET", path, NULL, NULL, TIMEOUT_MS);
        long long ms = ids_monotonic_ms() - t0;
        if (r.status == 200) {
            atomic_fetch_add(&reads_ok, 1);
            if (atomic_load(&swapped_flag))
                atomic_fetch_add(&reads_after, 1);
        } else {
            atomic_fetch_add(&reads_failed, 1);
            atomic_store(&last_bad_status, r.status);
        }
        for (long long m = atomic_load(&max_read_ms);
             ms > m && !atomic_compare_exchange_weak(&max_read_ms, &m, ms);)
            ;
        httpc_free(&r);
    }
    return NULL;
}

/* A full rebuild under writes equals the aggregates; reads never fail across it. */
START_TEST(rebuild_under_writes_keeps_every_row_and_every_read)
{
    PGconn *db = db_open();
    char id[32];
    for (int i = 0; i < 150; i++) {
        snprintf(id, sizeof id, "rb-%03d", i);
        open_account(id, 10 + i);
    }
    /* Other types in the topic: read and left alone. */
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(post("{\"type\":\"document.create\",\"aggregate_id\":\"rbd-%d\","
                              "\"payload\":{\"title\":\"t\"}}",
                              i),
                         201);
    }
    ck_assert(caught_up(db));

    /* A reader's open transaction: the swap must wait for it, and the reads queue behind. */
    PGconn *holder = db_open();
    exec_ok(holder, "BEGIN");
    exec_ok(holder, "SELECT count(*) FROM projection_account");

    atomic_store(&running, true);
    pthread_t w, rd[2];
    pthread_create(&w, NULL, writer, NULL);
    for (int i = 0; i < 2; i++)
        pthread_create(&rd[i], NULL, reader, (void *)(intptr_t)(i * 7));
    /* Writes flowing before the watermarks are taken. */
    int want_writes = 10;
    ck_assert(waitfor(writes_reach, &want_writes, WAIT_MS));

    tool t;
    const char *extra[] = {"--type=account", "--batch.max=10", "--swap.lock_timeout_ms=30000",
                           NULL};
    tool_start(&t, "rebuild", extra);
    ck_assert_msg(wait_phase(&t, "swapping"), "no swapping phase in %s", t.err);
    /* Fixed times are what is measured here: reads in flight at "swapping" get 300 ms to end
       (or block), then none may complete in the 1 s the swap waits for the holder. */
    usleep(300000);
    int blocked_from = atomic_load(&reads_ok);
    usleep(1000000); /* the swap waits for the holder; reads wait behind the swap */
    int blocked_to = atomic_load(&reads_ok);
    exec_ok(holder, "COMMIT");
    ck_assert_int_eq(tool_wait(&t, WAIT_MS), 0);
    atomic_store(&swapped_flag, true);
    /* Reads and writes go on after the swap. */
    int writes_after = atomic_load(&writes_ok) + 4;
    waitfor(traffic_after_swap, &writes_after, WAIT_MS); /* asserted below */
    atomic_store(&running, false);
    pthread_join(w, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(rd[i], NULL);
    PQfinish(holder);

    ck_assert_msg(atomic_load(&reads_failed) == 0, "%d reads failed (last status %d)",
                  atomic_load(&reads_failed), atomic_load(&last_bad_status));
    ck_assert_int_gt(atomic_load(&reads_ok), 20);
    ck_assert_int_gt(atomic_load(&reads_after), 0);
    /* Not vacuous: reads were in flight while the swap held the table, and waited. */
    ck_assert_msg(atomic_load(&max_read_ms) >= 700, "longest read %lld ms",
                  (long long)atomic_load(&max_read_ms));
    ck_assert_int_le(blocked_to - blocked_from, 2); /* 2 readers, each blocked in one read */
    ck_assert_int_gt(atomic_load(&writes_ok), 0);

    json_t *lines = json_lines(t.out, "result");
    json_t *res = json_array_get(lines, 0);
    ck_assert_str_eq(jstr(res, "status"), "done");
    ck_assert(json_is_true(json_object_get(res, "swapped")));
    ck_assert_int_gt(jint(res, "events_read"), jint(res, "events_projected")); /* documents */
    ck_assert_int_ge(jint(res, "events_projected"), 300);
    /* Writes landed in the live table after the watermarks: the catch-up kept them. */
    ck_assert_int_gt(jint(res, "rows_caught_up"), 0);
    ck_assert_int_ge(jint(res, "lock_held_ms"), 0);

    /* Progress as JSON lines: every one parses, the last one says done with all read. */
    json_t *prog = json_lines(t.err, "progress");
    ck_assert_int_ge(json_array_size(prog), 3);
    json_t *last = json_array_get(prog, json_array_size(prog) - 1);
    ck_assert_str_eq(jstr(last, "phase"), "done");
    ck_assert_int_eq(jint(last, "events_done"), jint(last, "events_total"));
    ck_assert_int_eq(jint(last, "events_total"), jint(res, "events_read"));
    ck_assert(json_is_array(json_object_get(last, "partitions")));
    ck_assert(json_is_number(json_object_get(last, "events_per_s")));
    json_decref(prog);
    json_decref(lines);

    /* Once writes stopped and the projector caught up: the rows of the write model... */
    ck_assert(caught_up(db));
    assert_projection_equals_aggregates(db);
    /* ...and of the live projection: a fresh build from the log finds nothing to change. */
    const char *dry[] = {"--type=account", "--dry-run", NULL};
    json_t *check = tool_run("rebuild", dry, 0);
    ck_assert_int_eq(differences(check), 0);
    ck_assert_int_eq(jint(check, "rows_caught_up"), 0);
    ck_assert_str_eq(jstr(check, "checksum_live"), jstr(check, "checksum_rebuilt"));
    json_decref(check);
    char shadow[64];
    q_text(db, "SELECT to_regclass('\"projection_account-rebuild\"') IS NOT NULL", shadow,
           sizeof shadow);
    ck_assert_str_eq(shadow, "f");
    PQfinish(db);
}
END_TEST

/* A dry run changes nothing, finds nothing on a consistent projection, finds tampering. */
START_TEST(a_dry_run_changes_nothing_and_finds_tampered_rows)
{
    PGconn *db = db_open();
    open_account("dry-1", 5);
    open_account("dry-2", 7);
    open_account("dry-3", 9);
    ck_assert(caught_up(db));
    char oid[32], sum[64], oid2[32], sum2[64];
    q_text(db, "SELECT 'projection_account'::regclass::oid", oid, sizeof oid);
    q_text(db, ROWS_MD5("projection_account"), sum, sizeof sum);

    const char *dry[] = {"--type=account", "--dry-run", NULL};
    json_t *res = tool_run("rebuild", dry, 0);
    ck_assert_int_eq(differences(res), 0);
    ck_assert(json_is_false(json_object_get(res, "swapped")));
    ck_assert_int_eq(jint(res, "rows"), jint(res, "live_rows"));
    json_decref(res);
    ck_assert_str_eq(q_text(db, "SELECT 'projection_account'::regclass::oid", oid2, sizeof oid2),
                     oid);
    ck_assert_str_eq(q_text(db, ROWS_MD5("projection_account"), sum2, sizeof sum2), sum);

    /* Tampered at the same version (no event is newer), and one row gone. */
    exec_ok(db, "UPDATE projection_account SET balance = 12345, state = jsonb_set(state, "
                "'{balance}', '12345') WHERE id = 'dry-1'");
    exec_ok(db, "DELETE FROM projection_account WHERE id = 'dry-2'");
    q_text(db, ROWS_MD5("projection_account"), sum, sizeof sum);
    res = tool_run("rebuild", dry, 0);
    ck_assert_int_eq(differences(res), 2);
    json_t *d = json_object_get(res, "differences");
    ck_assert_int_eq(jint(d, "differing"), 1);
    ck_assert_int_eq(jint(d, "only_rebuilt"), 1);
    ck_assert_int_eq(jint(d, "only_live"), 0);
    ck_assert_str_ne(jstr(res, "checksum_live"), jstr(res, "checksum_rebuilt"));
    char *examples = json_dumps(json_object_get(res, "examples"), 0);
    ck_assert_msg(strstr(examples, "\"dry-1\"") && strstr(examples, "\"dry-2\""), "%s", examples);
    free(examples);
    json_decref(res);
    /* Still nothing changed by the dry run: the tampering is there. */
    ck_assert_str_eq(q_text(db, ROWS_MD5("projection_account"), sum2, sizeof sum2), sum);

    /* A real rebuild repairs both rows. */
    const char *real[] = {"--type=account", NULL};
    json_decref(tool_run("rebuild", real, 0));
    ck_assert_int_eq(pgtest_int(db, "SELECT balance FROM projection_account WHERE id = 'dry-1'"),
                     5);
    ck_assert_int_eq(pgtest_int(db, "SELECT balance FROM projection_account WHERE id = 'dry-2'"),
                     7);
    ck_assert_str_ne(q_text(db, "SELECT 'projection_account'::regclass::oid", oid2, sizeof oid2),
                     oid);
    assert_projection_equals_aggregates(db);
    PQfinish(db);
}
END_TEST

/* A rebuild from a time equals a full rebuild. */
START_TEST(a_rebuild_from_a_time_equals_a_full_one)
{
    PGconn *db = db_open();
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "ft-%02d", i);
        open_account(id, 100 + i);
    }
    ck_assert(caught_up(db));
    usleep(1200000);
    char from[RFC3339_LEN], flag[64];
    rfc3339_now(from);
    usleep(1200000);
    /* After the time: changes to rows from before it, and new rows. */
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(post("{\"type\":\"account.withdraw\",\"aggregate_id\":\"ft-%02d\","
                              "\"payload\":{\"amount\":1}}",
                              i),
                         200);
        snprintf(id, sizeof id, "ft-new-%02d", i);
        open_account(id, 3);
    }
    ck_assert(caught_up(db));

    const char *full[] = {"--type=account", "--dry-run", NULL};
    snprintf(flag, sizeof flag, "--from-time=%s", from);
    const char *timed[] = {"--type=account", "--dry-run", flag, "--from-time.slack_ms=0", NULL};
    json_t *a = tool_run("rebuild", full, 0), *b = tool_run("rebuild", timed, 0);
    ck_assert_int_eq(differences(a), 0);
    ck_assert_int_eq(differences(b), 0);
    /* Nothing taken from the live table at the end: each build is complete on its own. */
    ck_assert_int_eq(jint(a, "rows_caught_up"), 0);
    ck_assert_int_eq(jint(b, "rows_caught_up"), 0);
    ck_assert_str_eq(jstr(a, "checksum_rebuilt"), jstr(b, "checksum_rebuilt"));
    ck_assert_int_eq(jint(a, "rows"), jint(b, "rows"));
    /* The rows from before the time came from the live table (the 10 untouched ft-* at least). */
    ck_assert_int_ge(jint(b, "rows_before_time"), 10);
    ck_assert_int_eq(jint(a, "rows_before_time"), 0);
    ck_assert_int_le(jint(b, "events_read"), jint(a, "events_read"));
    /* A broker that looks offsets up by time reads only what came after (the mock cannot, and
       the partitions with newer events are then read whole). */
    if (st.real_kafka)
        ck_assert_int_lt(jint(b, "events_read"), jint(a, "events_read"));
    json_decref(a);
    json_decref(b);

    /* And swapped for real, then compared with a full build. */
    const char *timed_swap[] = {"--type=account", flag, "--from-time.slack_ms=0", NULL};
    b = tool_run("rebuild", timed_swap, 0);
    ck_assert(json_is_true(json_object_get(b, "swapped")));
    json_decref(b);
    a = tool_run("rebuild", full, 0);
    ck_assert_int_eq(differences(a), 0);
    ck_assert_int_eq(jint(a, "rows_caught_up"), 0);
    json_decref(a);
    assert_projection_equals_aggregates(db);
    PQfinish(db);
}
END_TEST

/* The sums over one group of `lag --json`, and its partitions checked against consumer_offsets. */
static void check_group(PGconn *db, const json_t *g, const char *group, const char *topic,
                        long long *high, long long *lag)
{
    ck_assert_str_eq(jstr(g, "group"), group);
    ck_assert_str_eq(jstr(g, "topic"), topic);
    *high = *lag = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(g, "partitions"), i, p)
    {
        char sql[300];
        snprintf(sql, sizeof sql,
                 "SELECT next_offset FROM consumer_offsets WHERE group_id = '%s' AND topic = '%s' "
                 "AND partition = %lld",
                 group, topic, jint(p, "partition"));
        long long stored = pgtest_int(db, sql);
        const json_t *s = json_object_get(p, "stored_offset");
        ck_assert_int_eq(json_is_null(s) ? -1 : json_integer_value(s), stored);
        long long from = stored >= 0 ? stored : jint(p, "low_watermark");
        ck_assert_int_eq(jint(p, "lag"), jint(p, "high_watermark") - from);
        *high += jint(p, "high_watermark");
        *lag += jint(p, "lag");
    }
    ck_assert_int_eq(jint(g, "lag"), *lag);
    ck_assert_int_gt(i, 0);
}

/* Lag shows the stored offsets and the watermarks, and the messages produced between. */
START_TEST(lag_matches_consumer_offsets_and_what_was_produced)
{
    PGconn *db = db_open();
    ck_assert(caught_up(db));
    char pgroup[80], jgroup[80], commands[80], events[80];
    snprintf(pgroup, sizeof pgroup, "%sstate-processor", prefix);
    snprintf(jgroup, sizeof jgroup, "%sprojector", prefix);
    snprintf(commands, sizeof commands, "%scommands", prefix);
    snprintf(events, sizeof events, "%sevents", prefix);
    const char *json[] = {"--output=json", NULL};
    long long c1, cl1, e1, el1, c2, cl2, e2, el2;
    json_t *a = tool_run("lag", json, 0);
    json_t *groups = json_object_get(a, "groups");
    check_group(db, json_array_get(groups, 0), pgroup, commands, &c1, &cl1);
    check_group(db, json_array_get(groups, 1), jgroup, events, &e1, &el1);
    ck_assert_int_eq(cl1 + el1, 0); /* caught up */
    json_decref(a);

    /* The projector held up by a lock its writes need (reads are not): its lag grows. */
    PGconn *holder = db_open();
    exec_ok(holder, "BEGIN");
    exec_ok(holder, "LOCK TABLE projection_account IN SHARE MODE");
    char id[32];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof id, "lag-%02d", i);
        open_account(id, 0);
    }
    /* Published, and stuck before the projection. */
    for (int i = 0; i < 100 && pgtest_int(db, "SELECT count(*) FROM outbox WHERE published_at "
                                              "IS NULL") != 0;
         i++)
        usleep(100000);
    a = tool_run("lag", json, 0);
    groups = json_object_get(a, "groups");
    check_group(db, json_array_get(groups, 0), pgroup, commands, &c2, &cl2);
    check_group(db, json_array_get(groups, 1), jgroup, events, &e2, &el2);
    ck_assert_int_eq(c2 - c1, 12); /* one message per command */
    ck_assert_int_eq(e2 - e1, 12); /* one event per applied command */
    ck_assert_int_eq(cl2, 0);
    ck_assert_int_eq(el2, 12);
    json_decref(a);
    exec_ok(holder, "COMMIT");
    PQfinish(holder);
    ck_assert(caught_up(db));

    /* The table: a header, then each partition and a total per group, the same figures. */
    tool t;
    const char *as_text[] = {"--output=text", NULL};
    tool_start(&t, "lag", as_text);
    ck_assert_int_eq(tool_wait(&t, WAIT_MS), 0);
    char *text = slurp(t.out);
    ck_assert_msg(strncmp(text, "ROLE", 4) == 0, "%s", text);
    char want[400];
    snprintf(want, sizeof want, "%-10s %-24s %-24s %9s %12lld %12lld %10d", "projector", jgroup,
             events, "total", e2, e2, 0);
    ck_assert_msg(strstr(text, want), "no line '%s' in:\n%s", want, text);
    ck_assert_msg(strstr(text, "commands: 0 accepted; 0 abandoned"), "%s", text);
    free(text);

    /* A command accepted 10 minutes ago and not decided: the oldest, with its id. */
    exec_ok(db, "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, "
                "aggregate_id, status, created_at) VALUES ('6f1c1a4e-0000-4000-8000-0000000000a1', "
                "'default', 'lag-orphan', 'account.open', 'account', 'lag-orphan', 'accepted', "
                "now() - interval '10 minutes')");
    a = tool_run("lag", json, 0);
    json_t *cmds = json_object_get(a, "commands");
    ck_assert_int_eq(json_integer_value(json_object_get(cmds, "accepted")), 1);
    long long oldest = json_integer_value(json_object_get(cmds, "oldest_accepted_s"));
    ck_assert_msg(oldest >= 600 && oldest < 700, "oldest_accepted_s %lld", oldest);
    ck_assert_str_eq(json_string_value(json_object_get(cmds, "oldest_accepted_id")),
                     "6f1c1a4e-0000-4000-8000-0000000000a1");
    json_decref(a);
    exec_ok(db, "DELETE FROM commands WHERE idempotency_key = 'lag-orphan'");
    PQfinish(db);
}
END_TEST

/* SIGINT in the middle (the swap waiting for a lock) drops the shadow and exits non-zero. */
START_TEST(sigint_drops_the_shadow_and_leaves_the_live_table)
{
    PGconn *db = db_open();
    open_account("int-1", 1);
    ck_assert(caught_up(db));
    char oid[32], oid2[32], shadow[64];
    q_text(db, "SELECT 'projection_account'::regclass::oid", oid, sizeof oid);
    PGconn *holder = db_open();
    exec_ok(holder, "BEGIN");
    exec_ok(holder, "SELECT count(*) FROM projection_account");
    tool t;
    const char *extra[] = {"--type=account", "--swap.lock_timeout_ms=60000", NULL};
    tool_start(&t, "rebuild", extra);
    ck_assert(wait_phase(&t, "swapping"));
    q_text(db, "SELECT to_regclass('\"projection_account-rebuild\"') IS NOT NULL", shadow,
           sizeof shadow);
    ck_assert_str_eq(shadow, "t");
    kill(t.pid, SIGINT);
    ck_assert_int_eq(tool_wait(&t, 20000), 130);
    json_t *lines = json_lines(t.out, "result");
    ck_assert_str_eq(jstr(json_array_get(lines, 0), "status"), "interrupted");
    json_decref(lines);
    q_text(db, "SELECT to_regclass('\"projection_account-rebuild\"') IS NOT NULL", shadow,
           sizeof shadow);
    ck_assert_str_eq(shadow, "f");
    ck_assert_str_eq(q_text(db, "SELECT 'projection_account'::regclass::oid", oid2, sizeof oid2),
                     oid);
    /* Its lock request went with it: reads go on at once, though the holder still holds. */
    long long t0 = ids_monotonic_ms();
    httpc_response r =
        httpc_request(st.http_port, "GET", "/v1/aggregates/account/int-1", NULL, NULL, TIMEOUT_MS);
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    ck_assert_int_lt(ids_monotonic_ms() - t0, 2000);
    exec_ok(holder, "COMMIT");
    PQfinish(holder);
    PQfinish(db);
}
END_TEST

/* --help lists every key with its default; a bad key or value is an error naming it. */
static const struct {
    const char *sub;
    const char *args[3];
    const char *named; /* in the error logged */
} bad[] = {
    {"rebuild", {NULL}, "\"error\":\"type: "},
    {"rebuild", {"--type=spaceship"}, "\"error\":\"type: no aggregate type 'spaceship'"},
    {"rebuild", {"--type=account", "--from-time=yesterday"}, "\"error\":\"from_time: "},
    {"rebuild", {"--type=account", "--swap.attempts=0"}, "\"error\":\"swap.attempts: "},
    {"rebuild", {"--type=account", "--bogus=1"}, "unknown configuration key 'bogus'"},
    {"lag", {"--timeout_ms=5"}, "\"error\":\"timeout_ms: "},
    {"lag", {"--json=maybe"}, "\"error\":\"json: "},
    {"lag", {"--output=xml"}, "\"error\":\"output: 'xml' is not auto, text or json"},
    {"rebuild", {"--type=account", "--output=table"}, "\"error\":\"output: 'table' is not auto"},
};

START_TEST(help_lists_every_key_and_errors_name_the_key)
{
    const struct {
        const char *sub;
        const config_row *table;
    } cmds[] = {{"rebuild", rebuild_config_table}, {"lag", lag_config_table}};
    for (size_t c = 0; c < 2; c++) {
        const char *help[] = {"--help", NULL};
        tool t;
        tool_start(&t, cmds[c].sub, help);
        ck_assert_int_eq(tool_wait(&t, 10000), 0);
        char *text = slurp(t.out);
        for (const config_row *row = cmds[c].table; row->name; row++) {
            char flag[80], def[120];
            snprintf(flag, sizeof flag, "--%s ", row->name);
            snprintf(def, sizeof def, "default: %s", row->def && *row->def ? row->def : "(empty)");
            /* The flag's line, then the line of its variable and default. */
            const char *at = strstr(text, flag);
            ck_assert_msg(at, "%s --help: no %s", cmds[c].sub, flag);
            const char *next = strchr(at, '\n');
            ck_assert_ptr_nonnull(next);
            const char *end = strchr(next + 1, '\n');
            ck_assert_ptr_nonnull(end);
            char line[256];
            snprintf(line, sizeof line, "%.*s", (int)(end - next - 1), next + 1);
            ck_assert_msg(strstr(line, def), "%s --help: %s has '%s'", cmds[c].sub, flag, line);
        }
        free(text);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tool t;
        tool_start(&t, bad[i].sub, bad[i].args);
        ck_assert_int_eq(tool_wait(&t, 10000), 1);
        char *err = slurp(t.err);
        ck_assert_msg(strstr(err, bad[i].named), "%s %s: no %s in %s", bad[i].sub,
                      bad[i].args[0] ? bad[i].args[0] : "", bad[i].named, err);
        free(err);
    }
}
END_TEST

int main(void)
{
    if (stack_start(&st, false) != 0) {
        stack_stop(&st);
        return EXIT_FAILURE;
    }
    snprintf(prefix, sizeof prefix, "%s", st.topic_prefix); /* empty but on the shared broker */
    Suite *s = suite_create("rebuild");
    TCase *tc = tcase_create("rebuild");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, at_rest, NULL);
    tcase_add_test(tc, rebuild_under_writes_keeps_every_row_and_every_read);
    tcase_add_test(tc, a_dry_run_changes_nothing_and_finds_tampered_rows);
    tcase_add_test(tc, a_rebuild_from_a_time_equals_a_full_one);
    tcase_add_test(tc, lag_matches_consumer_offsets_and_what_was_produced);
    tcase_add_test(tc, sigint_drops_the_shadow_and_leaves_the_live_table);
    tcase_add_test(tc, help_lists_every_key_and_errors_name_the_key);
    suite_add_tcase(s, tc);
    int failed = check_run(s, CK_FORK_GETENV);
    if (failed || !stack_logs_clean(&st)) {
        stack_show_logs(&st);
        failed++;
    }
    int rc = stack_stop(&st);
    if (rc == 0 && !failed)
        stack_remove(&st);
    return failed == 0 && rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
