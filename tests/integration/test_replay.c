/*
 * test_replay.c: `state-processor replay` and `state-processor redrive` as an operator runs them:
 * the built binary, beside a gateway and a processor running as processes (tests/support/cluster)
 * on the runner's PostgreSQL and Kafka. Commands go in over HTTP (and, for messages no gateway
 * would send, straight to Kafka); the effects are read from PostgreSQL; the tools' JSON lines
 * are parsed.
 */
#include "checkrun.h"
#include "cluster.h"
#include "core/rfc3339.h"
#include "domain/envelope.h"
#include "httpc.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "stack.h"

#include <check.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 60000

static cluster cl;
static pid_t gateway, proc;
static int gw_port, proc_runs;
static PGconn *db;
static char group[96], commands_topic[96];

/* ---- PostgreSQL ---- */

static PGresult *q(const char *fmt, va_list ap)
{
    char sql[4096];
    vsnprintf(sql, sizeof(sql), fmt, ap);
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
                  "%s: %s", sql, PQerrorMessage(db));
    return r;
}

/* First column of the first row as a number; -1 when there is none or it is NULL. */
static long long q_int(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = q(fmt, ap);
    va_end(ap);
    long long v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* First column of the first row as text into out ("" when none). */
static void q_text(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = q(fmt, ap);
    va_end(ap);
    snprintf(out, len, "%s", PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

static void exec_sql(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PQclear(q(fmt, ap));
    va_end(ap);
}

static bool wait_int(long long want, const char *sql)
{
    for (int waited = 0; waited < WAIT_MS; waited += 100) {
        if (q_int("%s", sql) == want)
            return true;
        usleep(100000);
    }
    return false;
}

/*
 * Digests of the write model: every column of every row, so that a copy applied again (a new
 * version, a rewritten record, one more outbox row) changes them. state_only leaves out the
 * columns a second application of the same command would rewrite identically only in time and
 * position (updated_at, finished_at, kafka_*, created_at, published_at).
 */
typedef struct sums {
    char aggregates[40], commands[40], outbox[40];
} sums;

static void checksums(sums *s, bool state_only, const char *where_id)
{
    q_text(s->aggregates, sizeof(s->aggregates),
           "SELECT md5(coalesce(string_agg(%s, '|' ORDER BY tenant, type, id), '')) "
           "FROM aggregates a WHERE id LIKE '%s'",
           state_only ? "concat_ws(',', tenant, type, id, version, state, deleted)" : "a::text",
           where_id);
    q_text(s->commands, sizeof(s->commands),
           "SELECT md5(coalesce(string_agg(%s, '|' ORDER BY id), '')) FROM commands c "
           "WHERE aggregate_id LIKE '%s'",
           state_only ? "concat_ws(',', id, tenant, idempotency_key, type, aggregate_id, status, "
                        "http_status, result, version)"
                      : "c::text",
           where_id);
    q_text(s->outbox, sizeof(s->outbox),
           "SELECT md5(coalesce(string_agg(%s, '|' ORDER BY tenant, aggregate_type, "
           "aggregate_id, version), '')) FROM outbox o WHERE aggregate_id LIKE '%s'",
           state_only ? "concat_ws(',', tenant, aggregate_type, aggregate_id, version, "
                        "event_type, command_id, payload)"
                      : "o::text",
           where_id);
}

static void assert_same(const sums *a, const sums *b)
{
    ck_assert_str_eq(a->aggregates, b->aggregates);
    ck_assert_str_eq(a->commands, b->commands);
    ck_assert_str_eq(a->outbox, b->outbox);
}

/* ---- commands ---- */

/* POSTs one command with Prefer: respond-async; its id goes to id (may be NULL). */
static void post(const char *type, const char *agg, const char *payload, char *id)
{
    char body[512];
    snprintf(body, sizeof(body), "{\"type\":\"%s\",\"aggregate_id\":\"%s\",\"payload\":%s}", type,
             agg, payload);
    httpc_response r =
        httpc_request(gw_port, "POST", "/v1/commands", "Prefer: respond-async\r\n", body, 20000);
    ck_assert_msg(r.status == 202, "%s %s: %d %s", type, agg, r.status, r.body ? r.body : "");
    if (id)
        snprintf(id, IDS_UUID_LEN, "%s", json_string_value(json_object_get(r.json, "command_id")));
    httpc_free(&r);
}

/* Waits until every command of the aggregates matching like is decided and published. */
static void wait_settled(const char *like, long long commands)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM commands WHERE aggregate_id LIKE '%s' AND status <> "
             "'accepted'",
             like);
    ck_assert_msg(wait_int(commands, sql), "%lld commands of %s not decided", commands, like);
    ck_assert(wait_int(0, "SELECT count(*) FROM outbox WHERE published_at IS NULL"));
}

/* ---- Kafka, for messages no gateway would send ---- */

static int delivered;

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)arg;
    ck_assert_msg(d->err == 0, "delivery failed: %s", d->errstr);
    delivered++;
}

/* Produces one command to the commands topic as another producer might, and waits for it. */
static void produce(const char *key, const char *value, const header *h, size_t nh)
{
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", cl.bootstrap);
    struct event_base *base = event_base_new();
    char err[512];
    kafka_producer *p = kafka_producer_new(base, &props, on_delivery, NULL, err, sizeof(err));
    ck_assert_msg(p != NULL, "%s", err);
    int before = delivered;
    ck_assert_int_eq(
        kafka_produce(p, commands_topic, -1, key, strlen(key), value, strlen(value), h, nh, NULL),
        KAFKA_OK);
    ck_assert_int_eq(kafka_producer_flush(p, 10000), 0);
    ck_assert_int_eq(delivered, before + 1);
    kafka_producer_free(p);
    event_base_free(base);
    config_props_free(&props);
}

/* A deposit whose payload fails its schema (amount is no number): a dead letter with a record. */
static void produce_invalid_deposit(const char *agg, char id[IDS_UUID_LEN])
{
    ids_uuid(id);
    char now[RFC3339_LEN];
    rfc3339_now(now);
    envelope e = {.id = id,
                  .source = "/another-producer",
                  .type = "account.deposit",
                  .subject = (char *)agg,
                  .time = now,
                  .tenant = "default",
                  .expected_version = -1,
                  .reply_partition = -1};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    produce(agg, "{\"amount\":\"ten\"}", h, nh);
}

/* ---- the tools ---- */

static char last_log[400]; /* the stderr of the last tool run */

/*
 * Starts build/state-processor <cmd> with the cluster's connection flags and args (NULL-ended),
 * its stdout into out and its stderr into last_log (in the cluster's folder). No Check
 * assertion here: a forked twin may call it.
 */
static pid_t tool_spawn(const char *cmd, const char *const *args, char *out, size_t outlen)
{
    static int runs;
    const char *build = getenv("CQRS_BUILD") ? getenv("CQRS_BUILD") : "build";
    char bin[300], pg[600], bs[600], prefix[100];
    snprintf(bin, sizeof(bin), "%s/state-processor", build);
    snprintf(out, outlen, "%s/%s-%d.out", cl.dir, cmd, runs);
    snprintf(last_log, sizeof(last_log), "%s/%s-%d.log", cl.dir, cmd, runs++);
    snprintf(pg, sizeof(pg), "--pg.conninfo=%s", cl.conninfo);
    snprintf(bs, sizeof(bs), "--kafka.bootstrap.servers=%s", cl.bootstrap);
    snprintf(prefix, sizeof(prefix), "--topic.prefix=%s", cl.prefix);
    const char *argv[40] = {"state-processor", cmd, pg, bs, prefix};
    size_t n = 5;
    if (cl.mock)
        argv[n++] = "--kafka.fetch.wait.max.ms=5";
    for (size_t i = 0; args[i] && n < 39; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(last_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits for a tool started by tool_spawn(); returns its JSON lines, *status its exit status. */
static json_t *tool_collect(pid_t pid, const char *out, int *status)
{
    int ws = 0;
    ck_assert(waitpid(pid, &ws, 0) == pid);
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128;
    json_t *lines = json_array();
    FILE *f = fopen(out, "r");
    char line[8192];
    while (f && fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        ck_assert_msg(j != NULL, "%s printed a line that is not JSON: %s", out, line);
        json_array_append_new(lines, j);
    }
    if (f)
        fclose(f);
    return lines;
}

/* Runs a tool to its end: its JSON lines, and *status its exit status. */
static json_t *tool(const char *cmd, const char *const *args, int *status)
{
    char out[400];
    pid_t pid = tool_spawn(cmd, args, out, sizeof(out));
    ck_assert(pid > 0);
    return tool_collect(pid, out, status);
}

/* Runs a tool that must succeed. */
static json_t *tool_ok(const char *cmd, const char *const *args)
{
    int status;
    json_t *lines = tool(cmd, args, &status);
    ck_assert_msg(status == 0, "%s exited with %d (log: %s)", cmd, status, last_log);
    return lines;
}

/* The line whose member key is the string value. */
static json_t *line_of(json_t *lines, const char *key, const char *value)
{
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *v = json_string_value(json_object_get(l, key));
        if (v && strcmp(v, value) == 0)
            return l;
    }
    ck_abort_msg("no line with %s = %s", key, value);
    return NULL;
}

static long long num(const json_t *line, const char *key)
{
    const json_t *v = json_object_get(line, key);
    ck_assert_msg(json_is_integer(v), "%s is not a number", key);
    return json_integer_value(v);
}

/* Waits until the processors' stored offsets reach every end_offset a replay printed. */
static void wait_consumed(json_t *lines)
{
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        json_t *end = json_object_get(l, "end_offset");
        if (!json_is_integer(end))
            continue;
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM consumer_offsets WHERE group_id = '%s' AND topic = '%s' "
                 "AND partition = %lld AND next_offset >= %lld",
                 group, commands_topic,
                 (long long)json_integer_value(json_object_get(l, "partition")),
                 (long long)json_integer_value(end));
        ck_assert_msg(wait_int(1, sql), "the processors did not consume the copies: %s", sql);
    }
}

/* ---- the processor ---- */

/* Starts the processor (main() calls it too: no Check assertion here). */
static void start_processor(const char *schemas_dir)
{
    char flag[400];
    snprintf(flag, sizeof(flag), "--schemas.dir=%s", schemas_dir ? schemas_dir : "");
    const char *extra[] = {schemas_dir ? flag : NULL, NULL};
    proc = cluster_start(&cl, "state-processor", proc_runs++, extra);
}

/* Restarts the processor (with schemas_dir, or the runner's folder when NULL) and waits until it
   applies commands again. */
static void restart_processor(const char *schemas_dir)
{
    kill(proc, SIGTERM);
    waitpid(proc, NULL, 0);
    start_processor(schemas_dir);
    ck_assert(proc > 0);
    static int probes;
    char agg[32];
    snprintf(agg, sizeof(agg), "probe-%d", probes++);
    post("account.open", agg, "{\"owner\":\"probe\"}", NULL);
    wait_settled(agg, 1);
}

/* ---- (a) ---- */

START_TEST(replaying_the_whole_topic_changes_nothing)
{
    /* Applied, rejected by the domain (422) and by the version (412) commands. */
    for (int i = 0; i < 6; i++) {
        char agg[16];
        snprintf(agg, sizeof(agg), "all-%d", i);
        post("account.open", agg, "{\"owner\":\"ann\"}", NULL);
        post("account.deposit", agg, "{\"amount\":100}", NULL);
        post("account.withdraw", agg, i % 2 ? "{\"amount\":30}" : "{\"amount\":500}", NULL);
    }
    post("document.create", "all-doc", "{\"title\":\"t\",\"body\":{}}", NULL);
    wait_settled("all-%", 19);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE aggregate_id LIKE 'all-%%' AND "
                           "http_status = 422"),
                     3);
    sums before, after;
    checksums(&before, false, "%");

    const char *args[] = {"--from-offset=0", NULL};
    json_t *lines = tool_ok("replay", args);
    json_t *total = line_of(lines, "partition", "total");
    /* Every message of the topic was copied (the probe and this test's commands at least), and
       PostgreSQL had decided every one of them. */
    ck_assert_int_ge(num(total, "replayed"), 19);
    ck_assert_int_eq(num(total, "replayed"), num(total, "messages"));
    ck_assert_int_eq(num(total, "already_decided"), num(total, "replayed"));
    ck_assert_int_eq(num(total, "not_decided"), 0);
    /* The copies are on the topic, after the range: end - to = copies, per partition. */
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        if (json_is_integer(json_object_get(l, "end_offset")))
            ck_assert_int_eq(num(l, "end_offset") - num(l, "to_offset"), num(l, "replayed"));
    }
    wait_consumed(lines);
    wait_settled("all-%", 19);
    checksums(&after, false, "%");
    assert_same(&before, &after);
    json_decref(lines);
}
END_TEST

/* ---- (b) ---- */

static const char *const tables[] = {"aggregates", "commands", "outbox", "consumer_offsets"};

/* A backup of the write model, as pg_dump would take it (in the same database, for speed). */
static void backup(void)
{
    for (size_t i = 0; i < 4; i++)
        exec_sql("DROP TABLE IF EXISTS bk_%s; CREATE TABLE bk_%s AS SELECT * FROM %s", tables[i],
                 tables[i], tables[i]);
}

/* Puts the backup back while the processor runs, stored offsets included. */
static void restore(void)
{
    exec_sql("BEGIN; TRUNCATE aggregates, commands, outbox, consumer_offsets; "
             "INSERT INTO aggregates SELECT * FROM bk_aggregates; "
             "INSERT INTO commands SELECT * FROM bk_commands; "
             "INSERT INTO outbox SELECT * FROM bk_outbox; "
             "INSERT INTO consumer_offsets SELECT * FROM bk_consumer_offsets; COMMIT");
}

/* Sends the commands a restore will lose: 7 of them on 4 accounts, 2 of which are new. */
static void lost_commands(const char *prefix)
{
    char a[32], b[32], c[32], d[32];
    snprintf(a, sizeof(a), "%s-1", prefix);
    snprintf(b, sizeof(b), "%s-2", prefix);
    snprintf(c, sizeof(c), "%s-4", prefix);
    snprintf(d, sizeof(d), "%s-5", prefix);
    post("account.deposit", a, "{\"amount\":7}", NULL);
    post("account.withdraw", b, "{\"amount\":3}", NULL);
    post("account.open", c, "{\"owner\":\"cy\"}", NULL);
    post("account.deposit", c, "{\"amount\":11}", NULL);
    post("account.withdraw", c, "{\"amount\":1}", NULL);
    post("account.open", d, "{\"owner\":\"di\"}", NULL);
    post("account.withdraw", d, "{\"amount\":1}", NULL); /* 422: rejected again after replay */
}

/* Sends what the backup holds: 3 accounts opened and credited. */
static void kept_commands(const char *prefix)
{
    for (int i = 1; i <= 3; i++) {
        char agg[32];
        snprintf(agg, sizeof(agg), "%s-%d", prefix, i);
        post("account.open", agg, "{\"owner\":\"bo\"}", NULL);
        post("account.deposit", agg, "{\"amount\":50}", NULL);
    }
}

START_TEST(replay_after_a_restore_applies_the_lost_commands_once)
{
    kept_commands("rt");
    wait_settled("rt-%", 6);
    backup();
    char backup_time[RFC3339_LEN];
    rfc3339_now(backup_time);
    usleep(20000);
    lost_commands("rt");
    wait_settled("rt-%", 13);
    sums before, after;
    checksums(&before, true, "rt-%");
    long long balance = q_int("SELECT (state->>'balance')::int FROM aggregates WHERE id = 'rt-4'");
    ck_assert_int_eq(balance, 10);

    restore();
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates WHERE id IN ('rt-4', 'rt-5')"), 0);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE aggregate_id LIKE 'rt-%%'"), 6);
    /* The processor goes on after the restore: one more command, after the backup's time. */
    post("account.open", "rx-1", "{\"owner\":\"ex\"}", NULL);
    wait_settled("rx-1", 1);

    char from[64];
    snprintf(from, sizeof(from), "--from-time=%s", backup_time);
    const char *args[] = {from, NULL};
    json_t *lines = tool_ok("replay", args);
    json_t *total = line_of(lines, "partition", "total");
    ck_assert_int_eq(num(total, "replayed"), 8); /* the 7 lost and the one after the restore */
    ck_assert_int_eq(num(total, "not_decided"), 7);
    ck_assert_int_eq(num(total, "already_decided"), 1);
    wait_consumed(lines);
    json_decref(lines);
    wait_settled("rt-%", 13);

    /* Each lost command applied once, on the state the restore left: what was lost is back. */
    checksums(&after, true, "rt-%");
    assert_same(&before, &after);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox WHERE aggregate_id = 'rt-4'"), 3);
    ck_assert_int_eq(q_int("SELECT version FROM aggregates WHERE id = 'rx-1'"), 1);

    /* The same replay again: every copy is now a duplicate. */
    lines = tool_ok("replay", args);
    total = line_of(lines, "partition", "total");
    ck_assert_int_eq(num(total, "not_decided"), 0);
    wait_consumed(lines);
    json_decref(lines);
    checksums(&after, true, "rt-%");
    assert_same(&before, &after);
}
END_TEST

START_TEST(replay_from_the_offsets_the_backup_stored)
{
    kept_commands("ro");
    wait_settled("ro-%", 6);
    backup();
    lost_commands("ro");
    wait_settled("ro-%", 13);
    sums before, after;
    checksums(&before, true, "ro-%");
    restore();
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE aggregate_id LIKE 'ro-%%'"), 6);

    /* The offsets the processors stored in the backup say where the restored database stops. */
    long long not_decided = 0;
    for (int p = 0; p < 4; p++) {
        long long stored = q_int("SELECT next_offset FROM bk_consumer_offsets WHERE group_id = "
                                 "'%s' AND topic = '%s' AND partition = %d",
                                 group, commands_topic, p);
        char part[32], from[48];
        snprintf(part, sizeof(part), "--partition=%d", p);
        snprintf(from, sizeof(from), "--from-offset=%lld", stored < 0 ? 0 : stored);
        const char *args[] = {part, from, NULL};
        json_t *lines = tool_ok("replay", args);
        ck_assert_int_eq(json_array_size(lines), 3); /* the partition, the total, a note */
        json_t *total = line_of(lines, "partition", "total");
        not_decided += num(total, "not_decided");
        /* A range starting where the backup stopped holds only what the backup lacks. */
        if (stored >= 0)
            ck_assert_int_eq(num(total, "already_decided"), 0);
        wait_consumed(lines);
        json_decref(lines);
    }
    ck_assert_int_eq(not_decided, 7);
    wait_settled("ro-%", 13);
    checksums(&after, true, "ro-%");
    assert_same(&before, &after);
}
END_TEST

/* ---- (c) ---- */

/* Command ids of the carts cart-<n>, from their records. */
static void cart_id(int n, char id[IDS_UUID_LEN])
{
    q_text(id, IDS_UUID_LEN, "SELECT id FROM commands WHERE aggregate_id = 'cart-%d'", n);
}

static long long cart_applied(int n)
{
    return q_int("SELECT count(*) FROM commands c JOIN aggregates a ON a.id = c.aggregate_id "
                 "WHERE c.aggregate_id = 'cart-%d' AND c.status = 'applied' AND a.version = 1 "
                 "AND (SELECT count(*) FROM outbox o WHERE o.aggregate_id = 'cart-%d') = 1",
                 n, n);
}

/* Runs a redrive and returns its line for reason ("total" for the sum). */
static json_t *redrive(const char *const *args, const char *reason)
{
    json_t *lines = tool_ok("redrive", args);
    json_t *l = json_incref(line_of(lines, "reason", reason));
    json_decref(lines);
    return l;
}

/* A schemas folder without the cart domain: a processor deployed before it was added. */
static void old_schemas(char *dir, size_t len)
{
    snprintf(dir, len, "%s/old-schemas", cl.dir);
    mkdir(dir, 0755);
    const char *src = getenv("CQRS_SCHEMAS_DIR") ? getenv("CQRS_SCHEMAS_DIR") : "schemas/domains";
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "document.json" : "account.json";
        char from[600], to[600], abs[4096];
        snprintf(from, sizeof(from), "%s/%s", src, name);
        snprintf(to, sizeof(to), "%s/%s", dir, name);
        ck_assert(realpath(from, abs) != NULL);
        ck_assert(symlink(abs, to) == 0);
    }
}

static long long applied_carts(void)
{
    return q_int("SELECT count(*) FROM commands WHERE aggregate_id LIKE 'cart-%%' AND "
                 "status = 'applied'");
}

static void post_cart(int n)
{
    char agg[16];
    snprintf(agg, sizeof(agg), "cart-%d", n);
    post("cart.create", agg, "{\"customer\":\"ann\",\"currency\":\"EUR\"}", NULL);
}

START_TEST(a_poison_command_is_redriven_once)
{
    char since[RFC3339_LEN], between[RFC3339_LEN], dir[300];
    rfc3339_now(since);
    old_schemas(dir, sizeof(dir));
    restart_processor(dir);
    /* Two rounds of carts the processor cannot know, a second apart; an invalid payload; an
       envelope without id. */
    for (int n = 1; n <= 3; n++)
        post_cart(n);
    post_cart(7);
    wait_settled("cart-%", 4);
    usleep(1100000);
    rfc3339_now(between);
    usleep(1100000);
    for (int n = 4; n <= 6; n++)
        post_cart(n);
    char invalid[IDS_UUID_LEN];
    produce_invalid_deposit("poison-1", invalid);
    header bad[] = {{"ce_specversion", "1.0", 3}, {"ce_type", "account.open", 12}};
    produce("poison-2", "{}", bad, 2);
    wait_settled("cart-%", 7);
    wait_settled("poison-1", 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE aggregate_id LIKE 'cart-%%' AND "
                           "status = 'rejected' AND http_status = 400"),
                     7);
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates WHERE id LIKE 'cart-%%'"), 0);

    /* The fix: the processor restarts with every domain. The client of cart-7 gave up and
       created it again meanwhile, under a new command id. */
    restart_processor(NULL);
    post_cart(7);
    wait_settled("cart-%", 8);
    ck_assert_int_eq(applied_carts(), 1);
    char id1[IDS_UUID_LEN], id5[IDS_UUID_LEN], a1[64], a5[64];
    cart_id(1, id1);
    cart_id(5, id5);
    snprintf(a1, sizeof(a1), "--id=%s", id1);
    snprintf(a5, sizeof(a5), "--id=%s", id5);

    /* By id, twice at the same time: exactly those two, each applied once. */
    const char *by_id[] = {a1, a5, NULL};
    char twin_out[400];
    pid_t twin = tool_spawn("redrive", by_id, twin_out, sizeof(twin_out));
    json_t *t = redrive(by_id, "total");
    int twin_status;
    json_t *twin_lines = tool_collect(twin, twin_out, &twin_status);
    ck_assert_int_eq(twin_status, 0);
    json_t *t2 = line_of(twin_lines, "reason", "total");
    ck_assert_int_eq(num(t, "selected"), 2);
    ck_assert_int_eq(num(t2, "selected"), 2);
    /* Each id is reset and copied by one of the two at least; which one does not matter. */
    ck_assert_int_ge(num(t, "redriven") + num(t2, "redriven"), 2);
    json_decref(t);
    json_decref(twin_lines);
    ck_assert(wait_int(3, "SELECT count(*) FROM commands WHERE aggregate_id LIKE 'cart-%' AND "
                          "status = 'applied'"));
    ck_assert_int_eq(cart_applied(1), 1);
    ck_assert_int_eq(cart_applied(5), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates WHERE id IN ('cart-2', 'cart-3', "
                           "'cart-4', 'cart-6')"),
                     0);

    /* By time and reason: the first round only. cart-1 is applied already; cart-7's first
       command is reset and copied, and the domain now refuses it: the cart exists (409). */
    char until[64], since_flag[64];
    snprintf(until, sizeof(until), "--until=%s", between);
    snprintf(since_flag, sizeof(since_flag), "--since=%s", since);
    const char *first_round[] = {"--reason=unknown-command", since_flag, until, NULL};
    t = redrive(first_round, "unknown-command");
    ck_assert_int_eq(num(t, "selected"), 4);
    ck_assert_int_eq(num(t, "redriven"), 3);
    ck_assert_int_eq(num(t, "already_applied"), 1);
    json_decref(t);
    ck_assert(wait_int(5, "SELECT count(*) FROM commands WHERE aggregate_id LIKE 'cart-%' AND "
                          "status = 'applied'"));
    ck_assert(wait_int(1, "SELECT count(*) FROM commands WHERE aggregate_id = 'cart-7' AND "
                          "status = 'rejected' AND http_status = 409"));
    ck_assert_int_eq(cart_applied(2), 1);
    ck_assert_int_eq(cart_applied(3), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates WHERE id IN ('cart-4', 'cart-6')"), 0);
    long long first_offset = q_int("SELECT kafka_offset FROM commands WHERE id = '%s'", invalid);

    /* Everything since the test began: the rest of the carts, and the invalid deposit (which
       is dead-lettered again: its payload is still wrong); cart-7's record holds the domain's
       decision, not a dead letter's; the envelope without id cannot be matched to a record. */
    const char *all[] = {since_flag, NULL};
    json_t *lines = tool_ok("redrive", all);
    t = line_of(lines, "reason", "unknown-command");
    ck_assert_int_eq(num(t, "redriven"), 2);
    ck_assert_int_eq(num(t, "already_applied"), 4);
    ck_assert_int_eq(num(t, "decided_otherwise"), 1);
    t = line_of(lines, "reason", "invalid-payload");
    ck_assert_int_eq(num(t, "redriven"), 1);
    t = line_of(lines, "reason", "bad-envelope");
    ck_assert_int_eq(num(t, "selected"), 1);
    ck_assert_int_eq(num(t, "no_command_id"), 1);
    ck_assert_int_eq(num(t, "redriven"), 0);
    json_decref(lines);
    ck_assert(wait_int(7, "SELECT count(*) FROM commands WHERE aggregate_id LIKE 'cart-%' AND "
                          "status = 'applied'"));
    for (int n = 1; n <= 7; n++)
        ck_assert_msg(cart_applied(n) == 1, "cart-%d not applied exactly once", n);
    /* The deposit's record now holds the rejection of the redriven copy (a second dead letter). */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM commands WHERE id = '%s' AND status = 'rejected' AND "
             "http_status = 400 AND kafka_offset <> %lld",
             invalid, first_offset);
    ck_assert(wait_int(1, sql));

    /* Again: no cart is applied twice; the deposit's two dead letters make one redrive. */
    lines = tool_ok("redrive", all);
    t = line_of(lines, "reason", "unknown-command");
    ck_assert_int_eq(num(t, "redriven"), 0);
    ck_assert_int_eq(num(t, "already_applied"), 6);
    ck_assert_int_eq(num(t, "decided_otherwise"), 1);
    t = line_of(lines, "reason", "invalid-payload");
    ck_assert_int_eq(num(t, "dead_letters"), 2);
    ck_assert_int_eq(num(t, "redriven"), 1);
    ck_assert_int_eq(num(t, "duplicates"), 1);
    json_decref(lines);
    usleep(500000);
    for (int n = 1; n <= 7; n++)
        ck_assert_int_eq(cart_applied(n), 1);
    ck_assert_int_eq(applied_carts(), 7);
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates WHERE id = 'poison-1'"), 0);
}
END_TEST

/* ---- (d) ---- */

static long long topic_end(const char *topic)
{
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", cl.bootstrap);
    struct event_base *base = event_base_new();
    char err[512];
    kafka_consumer *r =
        kafka_consumer_new_reader(base, &props, topic, NULL, NULL, err, sizeof(err));
    ck_assert_msg(r != NULL, "%s", err);
    long long sum = 0;
    int n = kafka_consumer_partition_count(r, 10000);
    ck_assert_int_gt(n, 0);
    for (int p = 0; p < n; p++) {
        long long low, high;
        ck_assert_msg(kafka_consumer_query_watermarks(r, p, &low, &high, 10000, err, sizeof(err)) ==
                          0,
                      "%s", err);
        sum += high;
    }
    kafka_consumer_free(r);
    event_base_free(base);
    config_props_free(&props);
    return sum;
}

START_TEST(dry_run_changes_nothing)
{
    char invalid[IDS_UUID_LEN], dlq[128], id_flag[64];
    post("account.open", "dry-1", "{\"owner\":\"ed\"}", NULL);
    produce_invalid_deposit("dry-1", invalid);
    wait_settled("dry-1", 2);
    snprintf(dlq, sizeof(dlq), "%s.dlq", commands_topic);
    ck_assert(wait_int(1, "SELECT count(*) FROM commands WHERE aggregate_id = 'dry-1' AND "
                          "status = 'rejected'"));
    sums before, after;
    checksums(&before, false, "%");
    long long commands_end = topic_end(commands_topic), dlq_end = topic_end(dlq);

    const char *replay_args[] = {"--from-offset=0", "--dry-run", NULL};
    json_t *lines = tool_ok("replay", replay_args);
    json_t *total = line_of(lines, "partition", "total");
    ck_assert_int_gt(num(total, "replayed"), 0);
    ck_assert(json_is_true(json_object_get(total, "dry_run")));
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        if (json_object_get(l, "end_offset"))
            ck_assert(json_is_null(json_object_get(l, "end_offset")));
    }
    json_decref(lines);

    snprintf(id_flag, sizeof(id_flag), "--id=%s", invalid);
    const char *redrive_args[] = {id_flag, "--dry-run", NULL};
    json_t *t = redrive(redrive_args, "invalid-payload");
    ck_assert_int_eq(num(t, "redriven"), 1); /* would be */
    json_decref(t);

    /* The tools have exited: whatever they produced is in the topics by now. */
    ck_assert_int_eq(topic_end(commands_topic), commands_end);
    ck_assert_int_eq(topic_end(dlq), dlq_end);
    checksums(&after, false, "%");
    assert_same(&before, &after);
}
END_TEST

/* ---- guards and errors ---- */

START_TEST(commands_older_than_the_retention_are_not_replayed)
{
    post("account.open", "old-1", "{\"owner\":\"fi\"}", NULL);
    wait_settled("old-1", 1);
    /* With a retention of 5 minutes, every command is past it (less the 5-minute margin). */
    const char *args[] = {"--from-offset=0", "--idempotency.retention_s=300", NULL};
    json_t *lines = tool_ok("replay", args);
    json_t *total = line_of(lines, "partition", "total");
    ck_assert_int_gt(num(total, "expired"), 0);
    ck_assert_int_eq(num(total, "expired"), num(total, "messages") - num(total, "no_command_id"));
    ck_assert_int_eq(num(total, "replayed"), 0);
    json_decref(lines);
}
END_TEST

static const struct {
    const char *cmd;
    const char *args[3];
    const char *says; /* in the error line on stderr */
} refused[] = {
    {"replay", {NULL}, "from_offset, from_time"},
    {"replay", {"--from-offset=0", "--from-time=2026-01-01T00:00:00Z", NULL}, "exactly one"},
    {"replay", {"--from-time=yesterday", NULL}, "from_time: 'yesterday'"},
    {"replay", {"--from-offset=5", "--to-offset=2", NULL}, "to_offset"},
    {"replay", {"--from-offset=0", "--partition=99", NULL}, "partition: 99 is out of range"},
    {"replay", {"--from-offset=x", NULL}, "from_offset: 'x' is not an integer"},
    {"replay", {"--from-offset=0", "--output=xml", NULL}, "output: 'xml'"},
    {"redrive", {"--reason=typo", NULL}, "reason: 'typo'"},
    {"redrive", {"--id=42", NULL}, "id: '42' is not a command id"},
    {"redrive", {"--since=monday", NULL}, "since: 'monday'"},
    {"redrive", {"--dry-run=maybe", NULL}, "dry_run: 'maybe' is not a boolean"},
    {"redrive", {"--frm=1", NULL}, "unknown configuration key 'frm'"},
};

START_TEST(bad_options_are_refused_naming_the_key)
{
    int status = 0;
    json_t *lines = tool(refused[_i].cmd, refused[_i].args, &status);
    ck_assert_int_eq(status, 1);
    ck_assert_int_eq(json_array_size(lines), 0);
    json_decref(lines);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "grep -q '\"level\":\"fatal\"' '%s' && grep -qF -- \"%s\" '%s'",
             last_log, refused[_i].says, last_log);
    ck_assert_msg(system(cmd) == 0, "%s: the error in %s does not say \"%s\"", refused[_i].cmd,
                  last_log, refused[_i].says);
}
END_TEST

int main(void)
{
    log_init("test_replay", LOG_WARN);
    if (cluster_init(&cl, "replay") != 0)
        return EXIT_FAILURE;
    snprintf(group, sizeof(group), "%sprocessors", cl.prefix);
    snprintf(commands_topic, sizeof(commands_topic), "%scommands", cl.prefix);
    gw_port = stack_free_port();
    char port[32];
    snprintf(port, sizeof(port), "--http.port=%d", gw_port);
    const char *extra[] = {port, "--workers=1", NULL};
    start_processor(NULL);
    gateway = cluster_start(&cl, "command-gateway", 0, extra);
    int failed = 1;
    if (cluster_wait_ready(gw_port, 60000)) {
        db = PQconnectdb(cl.conninfo);
        PQclear(PQexec(db, "SET client_min_messages TO warning"));
        Suite *s = suite_create("replay");
        TCase *tc = tcase_create("replay");
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, replaying_the_whole_topic_changes_nothing);
        tcase_add_test(tc, replay_after_a_restore_applies_the_lost_commands_once);
        tcase_add_test(tc, replay_from_the_offsets_the_backup_stored);
        tcase_add_test(tc, a_poison_command_is_redriven_once);
        tcase_add_test(tc, dry_run_changes_nothing);
        tcase_add_test(tc, commands_older_than_the_retention_are_not_replayed);
        tcase_add_loop_test(tc, bad_options_are_refused_naming_the_key, 0,
                            (int)(sizeof(refused) / sizeof(refused[0])));
        suite_add_tcase(s, tc);
        failed = check_run(s, CK_NOFORK); /* the services are this process's children */
        PQfinish(db);
    } else {
        fprintf(stderr, "the gateway was not ready within 60 s\n");
    }
    pid_t all[] = {gateway, proc};
    return cluster_finish(&cl, all, 2, failed) ? EXIT_FAILURE : EXIT_SUCCESS;
}
