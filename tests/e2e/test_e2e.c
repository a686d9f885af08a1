/*
 * test_e2e.c: starts the whole system the way `make run` does (deploy/local/run.sh: private
 * PostgreSQL, mock Kafka, state-processor, command-gateway) and drives it over HTTP. Ends by
 * stopping it with SIGINT and checking that no process is left behind.
 */
#include "checkrun.h"
#include "core/ids.h"
#include "domain/domain.h"
#include "httpc.h"
#include "openapi.h"
#include "stack.h"

#include <check.h>
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static stack st;

#define TIMEOUT_MS 15000
/* The gateway's idempotency.inflight_timeout_s: a claim older than that is taken over. */
#define INFLIGHT_TIMEOUT_S 3
#define MAX_PARTITIONS     64

static httpc_response post(const char *headers, const char *body)
{
    return httpc_request(st.http_port, "POST", "/v1/commands", headers, body, TIMEOUT_MS);
}

static httpc_response get(const char *path, const char *headers)
{
    return httpc_request(st.http_port, "GET", path, headers, NULL, TIMEOUT_MS);
}

static long long jint(const json_t *j, const char *path)
{
    /* path: "a" or "a.b" */
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", path);
    char *dot = strchr(buf, '.');
    if (dot) {
        *dot = '\0';
        j = json_object_get(j, buf);
        return json_integer_value(json_object_get(j, dot + 1));
    }
    return json_integer_value(json_object_get(j, buf));
}

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static void expect_header(const httpc_response *r, const char *name, const char *value)
{
    char buf[256];
    const char *v = httpc_header(r, name, buf, sizeof(buf));
    ck_assert_msg(v != NULL, "missing header %s", name);
    ck_assert_str_eq(v, value);
}

/* Reads a counter from /metrics; -1 if absent. */
static long long metric(const char *line_prefix)
{
    httpc_response r = get("/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    long long v = -1;
    size_t n = strlen(line_prefix);
    for (char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, line_prefix, n) == 0 && l[n] == ' ')
            v = atoll(l + n + 1);
    }
    httpc_free(&r);
    return v;
}

START_TEST(open_account_sync_created)
{
    httpc_response r = post(
        NULL,
        "{\"type\":\"account.open\",\"aggregate_id\":\"acc-1\",\"payload\":{\"owner\":\"ada\"}}");
    ck_assert_int_eq(r.status, 201);
    ck_assert_ptr_nonnull(r.json);
    ck_assert_int_eq(jint(r.json, "version"), 1);
    ck_assert_str_eq(jstr(r.json, "status"), "applied");
    ck_assert_str_eq(jstr(r.json, "aggregate_id"), "acc-1");
    ck_assert_int_eq(jint(r.json, "state.balance"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "state"), "owner")),
                     "ada");
    expect_header(&r, "ETag", "\"1\"");
    expect_header(&r, "Location", "/v1/aggregates/account/acc-1");
    char key[128], want[128];
    ck_assert_ptr_nonnull(httpc_header(&r, "Idempotency-Key", key, sizeof(key)));
    snprintf(want, sizeof(want), "\"%s\"", jstr(r.json, "idempotency_key"));
    ck_assert_str_eq(key, want); /* an RFC 8941 sf-string */
    httpc_free(&r);
}
END_TEST

START_TEST(deposit_sync_bumps_version)
{
    httpc_response r = post("Idempotency-Key: dep-1\r\n",
                            "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\","
                            "\"payload\":{\"amount\":100}}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    ck_assert_int_eq(jint(r.json, "state.balance"), 100);
    expect_header(&r, "ETag", "\"2\"");
    expect_header(&r, "Idempotency-Key", "\"dep-1\"");
    ck_assert_str_eq(jstr(r.json, "idempotency_key"), "dep-1");
    httpc_free(&r);
}
END_TEST

START_TEST(deposit_async_then_applied)
{
    httpc_response r = post("Prefer: respond-async\r\n",
                            "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\","
                            "\"payload\":{\"amount\":5}}");
    ck_assert_int_eq(r.status, 202);
    expect_header(&r, "Preference-Applied", "respond-async");
    char loc[128];
    ck_assert_ptr_nonnull(httpc_header(&r, "Location", loc, sizeof(loc)));
    char expect_loc[128];
    snprintf(expect_loc, sizeof(expect_loc), "/v1/commands/%s", jstr(r.json, "command_id"));
    ck_assert_str_eq(loc, expect_loc);
    ck_assert_str_eq(jstr(r.json, "status"), "accepted");
    httpc_free(&r);

    /* The status resource turns to applied once the processor has committed it. */
    char status[32] = "";
    for (int i = 0; i < 100 && strcmp(status, "applied") != 0; i++) {
        httpc_response s = get(loc, NULL);
        if (s.status == 200)
            snprintf(status, sizeof(status), "%s", jstr(s.json, "status"));
        /* Recorded as accepted before the 202 was sent: never a 404. */
        ck_assert_int_eq(s.status, 200);
        if (strcmp(status, "applied") == 0) {
            ck_assert_int_eq(jint(s.json, "version"), 3);
            ck_assert_int_eq(jint(s.json, "http_status"), 200);
        } else {
            ck_assert_str_eq(status, "accepted");
        }
        httpc_free(&s);
        if (strcmp(status, "applied") != 0)
            usleep(100000);
    }
    ck_assert_str_eq(status, "applied");
}
END_TEST

/* The 202 names the command as it was asked for, an aggregate id that JSON must escape included. */
START_TEST(an_optimistic_answer_names_the_command)
{
    httpc_response r = post("Prefer: respond-async\r\nIdempotency-Key: \"k-202-\\\\x\"\r\n",
                            "{\"type\":\"account.deposit\",\"aggregate_id\":"
                            "\"acc-\\\"q\\\"\\\\\u00fc\",\"payload\":{\"amount\":5}}");
    ck_assert_int_eq(r.status, 202);
    ck_assert_ptr_nonnull(r.json);
    ck_assert(ids_is_uuid(jstr(r.json, "command_id")));
    ck_assert_str_eq(jstr(r.json, "status"), "accepted");
    ck_assert_str_eq(jstr(r.json, "aggregate_type"), "account");
    ck_assert_str_eq(jstr(r.json, "aggregate_id"), "acc-\"q\"\\\u00fc");
    ck_assert_str_eq(jstr(r.json, "idempotency_key"), "k-202-\\x");
    ck_assert_int_eq(json_object_size(r.json), 5);
    httpc_free(&r);
}
END_TEST

/* Prefer: wait=N, honoured, is said in Preference-Applied; answers vary on Prefer. */
START_TEST(prefer_wait_is_applied_and_answers_vary)
{
    httpc_response r = post(NULL, "{\"type\":\"account.open\",\"aggregate_id\":\"acc-prefer\","
                                  "\"payload\":{\"owner\":\"pat\"}}");
    ck_assert_int_eq(r.status, 201);
    httpc_free(&r);
    r = post("Prefer: wait=10\r\nIdempotency-Key: \"wait \\\"10\\\"\"\r\n",
             "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-prefer\","
             "\"payload\":{\"amount\":0}}");
    ck_assert_int_eq(r.status, 400); /* amount 0 fails the schema: no wait, nothing applied */
    httpc_free(&r);
    r = post("Prefer: wait=10\r\nIdempotency-Key: \"wait \\\"10\\\"\"\r\n",
             "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-prefer\","
             "\"payload\":{\"amount\":1}}");
    ck_assert_int_eq(r.status, 200);
    expect_header(&r, "Preference-Applied", "wait=10");
    expect_header(&r, "Vary", "Prefer");
    /* The key holds a space and quotes: echoed as an sf-string, escapes and all. */
    expect_header(&r, "Idempotency-Key", "\"wait \\\"10\\\"\"");
    ck_assert_str_eq(jstr(r.json, "idempotency_key"), "wait \"10\"");
    httpc_free(&r);
    r = post("Prefer: respond-async\r\n", "{\"type\":\"account.deposit\",\"aggregate_id\":"
                                          "\"acc-prefer\",\"payload\":{\"amount\":1}}");
    ck_assert_int_eq(r.status, 202);
    expect_header(&r, "Preference-Applied", "respond-async");
    expect_header(&r, "Vary", "Prefer");
    httpc_free(&r);
    /* wait=0: 202 once Kafka has it, as asked; or 200 when the result came back before Kafka's
       confirmation reached the gateway (a reply proves the delivery), which a real broker's
       timing allows. */
    r = post("Prefer: wait=0\r\n", "{\"type\":\"account.deposit\",\"aggregate_id\":"
                                   "\"acc-prefer\",\"payload\":{\"amount\":1}}");
    ck_assert_msg(r.status == 202 || (r.status == 200 && jstr(r.json, "status") &&
                                      strcmp(jstr(r.json, "status"), "applied") == 0),
                  "wait=0 answered %d", r.status);
    expect_header(&r, "Preference-Applied", "wait=0");
    httpc_free(&r);
    /* Without Prefer: no Preference-Applied, but the answer still varies on it. */
    r = post(NULL, "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-prefer\","
                   "\"payload\":{\"amount\":1}}");
    ck_assert_int_eq(r.status, 200);
    char buf[64];
    ck_assert_ptr_null(httpc_header(&r, "Preference-Applied", buf, sizeof(buf)));
    expect_header(&r, "Vary", "Prefer");
    httpc_free(&r);
}
END_TEST

START_TEST(overdraw_rejected_422)
{
    httpc_response r = post(NULL, "{\"type\":\"account.withdraw\",\"aggregate_id\":\"acc-1\","
                                  "\"payload\":{\"amount\":1000}}");
    ck_assert_int_eq(r.status, 422);
    expect_header(&r, "Content-Type", "application/problem+json");
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/invariant-violated");
    ck_assert_int_eq(jint(r.json, "status"), 422);
    ck_assert_int_eq(jint(r.json, "current_version"), 3);
    httpc_free(&r);
    /* Nothing changed. */
    r = get("/v1/aggregates/account/acc-1?min_version=3", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 3);
    ck_assert_int_eq(jint(r.json, "state.balance"), 105);
    httpc_free(&r);
}
END_TEST

/* Bad requests: 400 problem+json and nothing produced to Kafka. */
static const struct {
    const char *body;
    const char *type;
} bad_requests[] = {
    {"{bad", "/problems/malformed-json"},
    {"{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\",\"payload\":{\"amount\":"
     "18446744073709551616}}",
     "/problems/number-out-of-range"},
    {"{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\",\"payload\":{\"amount\":1e400}}",
     "/problems/number-out-of-range"},
    {"[1,2]", "/problems/invalid-request"},
    {"{\"type\":\"account.deposit\"}", "/problems/invalid-request"},
    {"{\"type\":\"nope.x\",\"aggregate_id\":\"a\"}", "/problems/unknown-command"},
    {"{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\",\"payload\":{\"amount\":-3}}",
     "/problems/invalid-payload"},
    {"{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\",\"payload\":{\"amount\":1,\"x\":1}}",
     "/problems/invalid-payload"},
};

/*
 * The high watermark of every partition of the commands topic, from the broker itself (not from
 * the gateway's counters, which delivery reports move some time after the answer); returns the
 * number of partitions.
 */
static int commands_topic_ends(long long *ends)
{
    char errstr[512], topic[96];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert_int_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", st.bootstrap, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "%s", errstr);
    snprintf(topic, sizeof(topic), "%scommands", st.topic_prefix);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, TIMEOUT_MS);
    ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1, "metadata of %s: %s",
                  topic, rd_kafka_err2str(err));
    int n = md->topics[0].partition_cnt;
    ck_assert_int_gt(n, 0);
    ck_assert_int_le(n, MAX_PARTITIONS);
    for (int i = 0; i < n; i++) {
        int64_t low, high;
        err = rd_kafka_query_watermark_offsets(rk, topic, md->topics[0].partitions[i].id, &low,
                                               &high, TIMEOUT_MS);
        ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks of %s: %s", topic,
                      rd_kafka_err2str(err));
        ends[i] = high;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return n;
}

START_TEST(bad_request_400_nothing_produced)
{
    long long before[MAX_PARTITIONS], after[MAX_PARTITIONS];
    int partitions = commands_topic_ends(before);
    httpc_response r = post(NULL, bad_requests[_i].body);
    ck_assert_int_eq(r.status, 400);
    expect_header(&r, "Content-Type", "application/problem+json");
    ck_assert_ptr_nonnull(r.json);
    ck_assert_str_eq(jstr(r.json, "type"), bad_requests[_i].type);
    ck_assert_int_eq(jint(r.json, "status"), 400);
    if (strcmp(bad_requests[_i].type, "/problems/invalid-payload") == 0) {
        json_t *e = json_array_get(json_object_get(r.json, "errors"), 0);
        ck_assert_ptr_nonnull(json_object_get(e, "pointer"));
        ck_assert_ptr_nonnull(json_object_get(e, "keyword"));
    }
    httpc_free(&r);
    /* Markers after it, applied (so in Kafka), until every partition has one: a command the
       gateway produced for the bad request came first in its partition, so it is there too. */
    int markers = 0;
    bool everywhere = false;
    while (!everywhere && markers < 16 * partitions) {
        char body[160];
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.open\",\"aggregate_id\":\"marker-%d-%d\","
                 "\"payload\":{\"owner\":\"m\"}}",
                 _i, markers++);
        r = post(NULL, body);
        ck_assert_msg(r.status == 201, "marker: %d %s", r.status, r.body);
        httpc_free(&r);
        ck_assert_int_eq(commands_topic_ends(after), partitions);
        everywhere = true;
        for (int p = 0; p < partitions; p++)
            everywhere = everywhere && after[p] > before[p];
    }
    ck_assert_msg(everywhere, "%d markers did not reach every partition", markers);
    long long added = 0;
    for (int p = 0; p < partitions; p++)
        added += after[p] - before[p];
    ck_assert_msg(added == markers, "%lld commands in the topic for %d markers and a 400", added,
                  markers);
}
END_TEST

START_TEST(read_aggregate_etag_and_304)
{
    httpc_response r = get("/v1/aggregates/account/acc-1?min_version=3", NULL);
    ck_assert_int_eq(r.status, 200);
    expect_header(&r, "ETag", "\"3\"");
    ck_assert_str_eq(jstr(json_object_get(r.json, "state"), "status"), "open");
    httpc_free(&r);
    r = get("/v1/aggregates/account/acc-1", "If-None-Match: \"3\"\r\n");
    ck_assert_int_eq(r.status, 304);
    httpc_free(&r);
    r = get("/v1/aggregates/account/no-such", NULL);
    ck_assert_int_eq(r.status, 404);
    expect_header(&r, "Content-Type", "application/problem+json");
    httpc_free(&r);
    r = get("/v1/aggregates/nosuchtype/acc-1", NULL);
    ck_assert_int_eq(r.status, 404);
    httpc_free(&r);
}
END_TEST

/* If-None-Match takes a list and compares weakly (RFC 9110 §13.1.2); acc-1 is at "3" here. */
static const struct {
    const char *method;
    const char *value;
    int status;
} if_none_match[] = {
    {"GET", "W/\"3\"", 304},
    {"GET", "\"1\", \"3\"", 304},
    {"GET", "\"1\",W/\"3\"", 304},
    {"GET", "*", 304},
    {"HEAD", "\"2\", W/\"3\"", 304},
    {"GET", "\"1\", \"2\"", 200},
    {"GET", "W/\"2\"", 200},
    {"GET", "\"33\"", 200},
    {"GET", "3", 200}, /* not an entity-tag: no condition */
    {"HEAD", "\"1\"", 200},
};

START_TEST(if_none_match_weak_lists)
{
    char headers[128];
    snprintf(headers, sizeof(headers), "If-None-Match: %s\r\n", if_none_match[_i].value);
    httpc_response r = httpc_request(st.http_port, if_none_match[_i].method,
                                     "/v1/aggregates/account/acc-1", headers, NULL, TIMEOUT_MS);
    ck_assert_msg(r.status == if_none_match[_i].status, "%s If-None-Match: %s gave %d",
                  if_none_match[_i].method, if_none_match[_i].value, r.status);
    expect_header(&r, "ETag", "\"3\"");
    httpc_free(&r);
}
END_TEST

#define DEPOSIT_1(id)                                                                              \
    "{\"type\":\"account.deposit\",\"aggregate_id\":\"" id "\",\"payload\":{\"amount\":1}}"

START_TEST(if_match_mismatch_412)
{
    httpc_response r =
        post("If-Match: \"1\"\r\n", "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\","
                                    "\"payload\":{\"amount\":1}}");
    ck_assert_int_eq(r.status, 412);
    ck_assert_int_eq(jint(r.json, "current_version"), 3);
    httpc_free(&r);
    r = post("If-Match: \"3\"\r\n", "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-1\","
                                    "\"payload\":{\"amount\":1}}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 4);
    httpc_free(&r);
}
END_TEST

/* If-Match takes * and lists and compares strongly (RFC 9110 §13.1.1); acc-1 is at "4" here. */
static const struct {
    const char *value;
    const char *body;
    int status;
    long long version; /* 200: the version made; 412: current_version, -1 when not given */
} if_match[] = {
    {"W/\"4\"", DEPOSIT_1("acc-1"), 412, -1}, /* a weak tag never matches */
    {"\"04\"", DEPOSIT_1("acc-1"), 412, -1},
    {"\"x\", W/\"4\", \"4\"", DEPOSIT_1("acc-1"), 200, 5},
    {"*", DEPOSIT_1("acc-1"), 200, 6},
    {"*", DEPOSIT_1("acc-if-match"), 412, 0}, /* * needs the aggregate to exist */
    {"*",
     "{\"type\":\"account.open\",\"aggregate_id\":\"acc-if-match\",\"payload\":{\"owner\":"
     "\"x\"}}",
     412, 0},
    {"\"5\", \"6\"", DEPOSIT_1("acc-1"), 400, -1}, /* a command expects one version */
};

START_TEST(if_match_star_and_lists)
{
    char headers[128];
    snprintf(headers, sizeof(headers), "If-Match: %s\r\n", if_match[_i].value);
    httpc_response r = post(headers, if_match[_i].body);
    ck_assert_msg(r.status == if_match[_i].status, "If-Match: %s gave %d %s", if_match[_i].value,
                  r.status, r.body);
    if (r.status == 200)
        ck_assert_int_eq(jint(r.json, "version"), if_match[_i].version);
    if (r.status == 412 && if_match[_i].version >= 0)
        ck_assert_int_eq(jint(r.json, "current_version"), if_match[_i].version);
    httpc_free(&r);
}
END_TEST

/* ---- 200 clients racing on one aggregate with If-Match ---- */

#define RACERS 200
#define ROUNDS 3

typedef struct race_result {
    int status;         /* 200 or 412 once decided; anything else is a failure */
    long long expected; /* the If-Match version sent */
    long long version;  /* 200: the version the command made */
    long long current;  /* 412: the current version in the problem body */
} race_result;

static race_result race[RACERS][ROUNDS];

/* A 202 (the deadline passed first) is followed until the command is decided. */
static void race_follow(race_result *out, const char *command_id)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/commands/%s", command_id);
    for (int i = 0; i < 300; i++) {
        httpc_response s = get(path, NULL);
        const char *state = s.status == 200 ? jstr(s.json, "status") : "";
        if (strcmp(state, "applied") == 0 || strcmp(state, "rejected") == 0) {
            out->status = (int)jint(s.json, "http_status");
            out->version = jint(s.json, "version");
            out->current = -1; /* the command resource does not repeat the problem body */
            httpc_free(&s);
            return;
        }
        httpc_free(&s);
        usleep(100000);
    }
    out->status = -202;
}

static void *racer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < ROUNDS; round++) {
        race_result *out = &race[id][round];
        /* From the projection, which may trail: a stale ETag is one more 412. */
        httpc_response g = get("/v1/aggregates/account/acc-race?min_version=1", NULL);
        char etag[32] = "";
        httpc_header(&g, "ETag", etag, sizeof(etag));
        httpc_free(&g);
        out->expected = atoll(etag + (etag[0] == '"'));
        char headers[128];
        snprintf(headers, sizeof(headers), "If-Match: %s\r\nIdempotency-Key: race-%d-%d\r\n", etag,
                 id, round);
        httpc_response r = post(headers, "{\"type\":\"account.deposit\",\"aggregate_id\":"
                                         "\"acc-race\",\"payload\":{\"amount\":1}}");
        out->status = r.status;
        if (r.status == 200)
            out->version = jint(r.json, "version");
        else if (r.status == 412)
            out->current = jint(r.json, "current_version");
        else if (r.status == 202)
            race_follow(out, jstr(r.json, "command_id"));
        httpc_free(&r);
    }
    return NULL;
}

/*
 * No lost update: each version is made by exactly one command, every other writer that expected
 * it gets 412, and the final version and balance count the successes.
 */
START_TEST(if_match_race_one_success_per_version)
{
    httpc_response r = post(NULL, "{\"type\":\"account.open\",\"aggregate_id\":\"acc-race\","
                                  "\"payload\":{\"owner\":\"race\"}}");
    ck_assert_int_eq(r.status, 201);
    long long initial = jint(r.json, "version");
    httpc_free(&r);
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, racer, (void *)(intptr_t)i), 0);
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);

    static int made[RACERS * ROUNDS + 2];
    memset(made, 0, sizeof(made));
    int successes = 0, conflicts = 0;
    for (int i = 0; i < RACERS; i++) {
        for (int k = 0; k < ROUNDS; k++) {
            const race_result *x = &race[i][k];
            ck_assert_msg(x->status == 200 || x->status == 412, "racer %d round %d: status %d", i,
                          k, x->status);
            if (x->status == 200) {
                /* It applied at exactly the version it expected. */
                ck_assert_int_eq(x->version, x->expected + 1);
                ck_assert(x->version > initial &&
                          x->version <= initial + (long long)RACERS * ROUNDS);
                made[x->version - initial]++;
                successes++;
            } else {
                conflicts++;
                if (x->current >= 0) /* the current version it lost to */
                    ck_assert_int_gt(x->current, x->expected);
            }
        }
    }
    for (int v = 1; v <= successes; v++)
        ck_assert_msg(made[v] == 1, "version %lld made by %d commands", initial + v, made[v]);
    ck_assert_int_eq(successes + conflicts, (long long)RACERS * ROUNDS);
    ck_assert_int_gt(conflicts, 0); /* it was a race */
    char race_path[96];
    snprintf(race_path, sizeof race_path, "/v1/aggregates/account/acc-race?min_version=%lld",
             initial + successes);
    r = get(race_path, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), initial + successes);
    ck_assert_int_eq(jint(r.json, "state.balance"), successes);
    httpc_free(&r);
    fprintf(stderr, "if-match race: %d clients x %d rounds: %d applied, %d x 412\n", RACERS, ROUNDS,
            successes, conflicts);
}
END_TEST

START_TEST(document_lifecycle)
{
    httpc_response r = post(NULL, "{\"type\":\"document.create\",\"aggregate_id\":\"doc-1\","
                                  "\"payload\":{\"title\":\"a\",\"tags\":[\"x\"],\"n\":1}}");
    ck_assert_int_eq(r.status, 201);
    httpc_free(&r);
    r = post(NULL, "{\"type\":\"document.patch\",\"aggregate_id\":\"doc-1\","
                   "\"payload\":{\"title\":\"b\",\"n\":null}}");
    ck_assert_int_eq(r.status, 200);
    json_t *want = json_loads("{\"title\":\"b\",\"tags\":[\"x\"]}", 0, NULL);
    ck_assert(json_equal(json_object_get(r.json, "state"), want));
    json_decref(want);
    httpc_free(&r);
    r = post(NULL, "{\"type\":\"document.delete\",\"aggregate_id\":\"doc-1\",\"payload\":{}}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 3);
    httpc_free(&r);
    r = get("/v1/aggregates/document/doc-1?min_version=3", NULL);
    ck_assert_int_eq(r.status, 404);
    httpc_free(&r);
    r = post(NULL, "{\"type\":\"document.patch\",\"aggregate_id\":\"doc-1\",\"payload\":{}}");
    ck_assert_int_eq(r.status, 422);
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/aggregate-not-found");
    httpc_free(&r);
}
END_TEST

/* Sends one cart command for aggregate id; returns the answer (caller frees). */
static httpc_response cart(const char *id, const char *type, const char *payload)
{
    char body[512];
    snprintf(body, sizeof body, "{\"type\":\"cart.%s\",\"aggregate_id\":\"%s\",\"payload\":%s}",
             type, id, payload);
    return post(NULL, body);
}

/* The answer's first error is at pointer, for keyword. */
static void expect_error(const httpc_response *r, const char *pointer, const char *keyword)
{
    const json_t *e = json_array_get(json_object_get(r->json, "errors"), 0);
    ck_assert_msg(e != NULL, "no errors in %s", r->body);
    ck_assert_str_eq(jstr(e, "pointer"), pointer);
    ck_assert_str_eq(jstr(e, "keyword"), keyword);
}

/* The cart domain is only a file in schemas/domains: every rule and invariant of it over HTTP. */
START_TEST(cart_lifecycle_from_a_domain_file)
{
    httpc_response r = cart("cart-1", "create", "{\"customer\":\"ada\",\"currency\":\"EUR\"}");
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(jstr(json_object_get(r.json, "state"), "status"), "open");
    httpc_free(&r);
    r = cart("cart-1", "add_item", "{\"sku\":\"A1\",\"quantity\":2,\"unit_price\":300}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    httpc_free(&r);
    r = cart("cart-1", "add_item", "{\"sku\":\"B2\",\"quantity\":1,\"unit_price\":50}");
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    r = cart("cart-1", "remove_item", "{\"sku\":\"A1\"}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 4);
    httpc_free(&r);
    r = cart("cart-1", "remove_item", "{\"sku\":\"A1\"}"); /* gone already */
    ck_assert_int_eq(r.status, 422);
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/precondition-failed");
    expect_error(&r, "/items/A1", "remove");
    httpc_free(&r);
    r = cart("cart-1", "add_item", "{\"sku\":\"C3\",\"quantity\":0,\"unit_price\":1}");
    ck_assert_int_eq(r.status, 400);
    expect_error(&r, "/quantity", "minimum");
    httpc_free(&r);
    r = cart("cart-1", "check_out", "{}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 5);
    httpc_free(&r);
    /* A checked-out cart never changes. */
    r = cart("cart-1", "add_item", "{\"sku\":\"D4\",\"quantity\":1,\"unit_price\":1}");
    ck_assert_int_eq(r.status, 422);
    expect_error(&r, "/status", "where");
    httpc_free(&r);
    r = get("/v1/aggregates/cart/cart-1?min_version=5", NULL);
    ck_assert_int_eq(r.status, 200);
    expect_header(&r, "ETag", "\"5\"");
    json_t *want =
        json_loads("{\"customer\":\"ada\",\"currency\":\"EUR\",\"status\":\"checked_out\","
                   "\"items\":{\"B2\":{\"quantity\":1,\"unit_price\":50}}}",
                   0, NULL);
    ck_assert_msg(json_equal(json_object_get(r.json, "state"), want), "state is %s", r.body);
    json_decref(want);
    httpc_free(&r);
    /* The invariant lives in the state schema: an empty cart cannot be checked out. */
    r = cart("cart-2", "create", "{\"customer\":\"bob\",\"currency\":\"USD\"}");
    ck_assert_int_eq(r.status, 201);
    httpc_free(&r);
    r = cart("cart-2", "check_out", "{}");
    ck_assert_int_eq(r.status, 422);
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/invariant-violated");
    expect_error(&r, "/items", "minProperties");
    httpc_free(&r);
}
END_TEST

/* Runs one SQL statement on the stack's database (test set-up only). */
static void sql(const char *text)
{
    PGconn *db = PQconnectdb(st.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    PGresult *r = PQexec(db, text);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", text, PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);
}

START_TEST(idempotency_key_replays_the_first_answer)
{
    httpc_response r = post(NULL, "{\"type\":\"account.open\",\"aggregate_id\":\"acc-idem\","
                                  "\"payload\":{\"owner\":\"ida\"}}");
    ck_assert_int_eq(r.status, 201);
    httpc_free(&r);
    httpc_response first = post("Idempotency-Key: \"rep-1\"\r\n",
                                "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-idem\","
                                "\"payload\":{\"amount\":7}}");
    ck_assert_int_eq(first.status, 200);
    ck_assert_int_eq(jint(first.json, "version"), 2);
    char buf[64];
    ck_assert_ptr_null(httpc_header(&first, "Idempotent-Replayed", buf, sizeof(buf)));
    /* The same request, spelled differently: members reordered, a bare-token key. */
    httpc_response again = post("Idempotency-Key: rep-1\r\n",
                                "{ \"payload\": {\"amount\": 7}, \"aggregate_id\": \"acc-idem\", "
                                "\"type\": \"account.deposit\" }");
    ck_assert_int_eq(again.status, 200);
    expect_header(&again, "Idempotent-Replayed", "true");
    expect_header(&again, "ETag", "\"2\"");
    ck_assert(json_equal(again.json, first.json));
    httpc_free(&first);
    httpc_free(&again);
    r = get("/v1/aggregates/account/acc-idem?min_version=2", NULL);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    ck_assert_int_eq(jint(r.json, "state.balance"), 7);
    httpc_free(&r);
    /* A rejection is replayed as it was. */
    first = post("Idempotency-Key: rep-2\r\n", "{\"type\":\"account.withdraw\",\"aggregate_id\":"
                                               "\"acc-idem\",\"payload\":{\"amount\":100}}");
    ck_assert_int_eq(first.status, 422);
    again = post("Idempotency-Key: rep-2\r\n", "{\"type\":\"account.withdraw\",\"aggregate_id\":"
                                               "\"acc-idem\",\"payload\":{\"amount\":100}}");
    ck_assert_int_eq(again.status, 422);
    expect_header(&again, "Idempotent-Replayed", "true");
    ck_assert_str_eq(jstr(again.json, "command_id"), jstr(first.json, "command_id"));
    httpc_free(&first);
    httpc_free(&again);
}
END_TEST

START_TEST(idempotency_key_with_another_body_is_422)
{
    httpc_response r = post("Idempotency-Key: rep-1\r\n",
                            "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-idem\","
                            "\"payload\":{\"amount\":8}}");
    ck_assert_int_eq(r.status, 422);
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/idempotency-key-reused");
    httpc_free(&r);
    r = get("/v1/aggregates/account/acc-idem?min_version=2", NULL);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    httpc_free(&r);
}
END_TEST

/* Opens account id; returns the pid of the stack's processor. */
static pid_t open_with_processor(const char *id)
{
    char body[160];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             id);
    httpc_response r = post(NULL, body);
    ck_assert_int_eq(r.status, 201);
    httpc_free(&r);
    pid_t proc = stack_processor_pid(&st);
    ck_assert_msg(proc > 0, "the stack's processor was not found");
    return proc;
}

/* Waits (up to 10 s) until the command at loc is no longer accepted; returns its status. */
static void wait_decided(const char *loc, char *status, size_t len)
{
    snprintf(status, len, "accepted");
    for (int i = 0; i < 100 && strcmp(status, "accepted") == 0; i++) {
        httpc_response s = get(loc, NULL);
        if (s.status == 200)
            snprintf(status, len, "%s", jstr(s.json, "status"));
        httpc_free(&s);
        if (strcmp(status, "accepted") == 0)
            usleep(100000);
    }
}

START_TEST(idempotency_key_in_flight_is_409)
{
    pid_t proc = open_with_processor("acc-busy");
    httpc_response r;
    const char *body = "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-busy\","
                       "\"payload\":{\"amount\":1}}";
    /* A first request that holds the key and is not decided: nobody processes it. No assertion
       while the processor is stopped: a failure must not leave it stopped. */
    ck_assert_int_eq(kill(proc, SIGSTOP), 0);
    httpc_response first = post("Idempotency-Key: busy-1\r\nPrefer: respond-async\r\n", body);
    r = post("Idempotency-Key: busy-1\r\n", body);
    kill(proc, SIGCONT);
    ck_assert_int_eq(first.status, 202);
    ck_assert_int_eq(r.status, 409);
    expect_header(&r, "Content-Type", "application/problem+json");
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/in-flight");
    ck_assert_str_eq(jstr(r.json, "command_id"), jstr(first.json, "command_id"));
    /* When to ask again: the command is normally decided by then. */
    expect_header(&r, "Retry-After", "1");
    httpc_free(&r);
    char loc[128], status[32];
    snprintf(loc, sizeof(loc), "/v1/commands/%s", jstr(first.json, "command_id"));
    wait_decided(loc, status, sizeof(status));
    ck_assert_str_eq(status, "applied");
    httpc_free(&first);
}
END_TEST

/*
 * Sends a deposit to aggregate_id (opened by open_with_processor(), whose processor is proc) with
 * the processor stopped, so that a record of the command can only be the gateway's, and reads its
 * Location before the processor goes on; then runs cleanup (or not: NULL). Checks the answer was
 * 202 and the record accepted, and that the command is applied once the processor goes on.
 */
static void expect_gateway_record(pid_t proc, const char *prefer, const char *aggregate_id,
                                  void (*cleanup)(void))
{
    char body[160];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.deposit\",\"aggregate_id\":\"%s\",\"payload\":{\"amount\":5}}",
             aggregate_id);
    kill(proc, SIGSTOP); /* no assertion until SIGCONT: a failure must not leave it stopped */
    httpc_response r = post(prefer, body);
    char loc[128] = "";
    httpc_header(&r, "Location", loc, sizeof(loc));
    httpc_response rec = get(loc, NULL);
    kill(proc, SIGCONT);
    if (cleanup)
        cleanup();
    ck_assert_msg(r.status == 202, "%d %s", r.status, r.body);
    ck_assert_msg(rec.status == 200, "GET %s: %d %s", loc, rec.status, rec.body);
    ck_assert_str_eq(jstr(rec.json, "status"), "accepted");
    httpc_free(&r);
    httpc_free(&rec);
    char status[32];
    wait_decided(loc, status, sizeof(status));
    ck_assert_str_eq(status, "applied");
}

static void drop_race_once(void)
{
    sql("DROP TRIGGER race_once ON commands; DROP FUNCTION race_once(); DROP SEQUENCE race_once");
}

START_TEST(an_accepted_record_that_loses_a_race_is_written_again)
{
    pid_t proc = open_with_processor("acc-recorded");
    /* One unique violation, as the gateway's batched INSERT of accepted records gets when the
       processor inserts its row of the same command meanwhile (ON CONFLICT has one arbiter). */
    sql("CREATE SEQUENCE race_once; "
        "CREATE FUNCTION race_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.aggregate_id = 'acc-recorded' AND NEW.status = 'accepted' THEN "
        "IF nextval('race_once') = 1 THEN "
        "RAISE unique_violation USING MESSAGE = 'a race lost, on purpose'; END IF; END IF; "
        "RETURN NEW; END $$; "
        "CREATE TRIGGER race_once BEFORE INSERT ON commands FOR EACH ROW "
        "EXECUTE FUNCTION race_once()");
    /* The 202 waits for the record, written at the second attempt. */
    expect_gateway_record(proc, "Prefer: respond-async\r\n", "acc-recorded", drop_race_once);
}
END_TEST

/*
 * A sync request is recorded by the processor, not the gateway, unless its wait ends first
 * (ADR 0041): then its 202's Location answers at once, before any processor has the command.
 */
START_TEST(a_sync_request_whose_wait_ends_first_is_recorded)
{
    pid_t proc = open_with_processor("acc-waited");
    expect_gateway_record(proc, "Prefer: wait=1\r\n", "acc-waited", NULL);
}
END_TEST

START_TEST(an_assigned_key_echoed_with_another_body_is_422)
{
    /* The gateway makes the keys up; the client echoes them, as a retry would. */
    const char *open = "{\"type\":\"account.open\",\"aggregate_id\":\"acc-echo\","
                       "\"payload\":{\"owner\":\"eve\"}}";
    httpc_response sync = post(NULL, open);
    ck_assert_int_eq(sync.status, 201);
    char sync_key[128];
    ck_assert_ptr_nonnull(httpc_header(&sync, "Idempotency-Key", sync_key, sizeof(sync_key)));
    httpc_free(&sync);
    const char *deposit = "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-echo\","
                          "\"payload\":{\"amount\":4}}";
    httpc_response async = post("Prefer: respond-async\r\n", deposit);
    ck_assert_int_eq(async.status, 202);
    char async_key[128], loc[128], status[32];
    ck_assert_ptr_nonnull(httpc_header(&async, "Idempotency-Key", async_key, sizeof(async_key)));
    ck_assert_ptr_nonnull(httpc_header(&async, "Location", loc, sizeof(loc)));
    httpc_free(&async);
    wait_decided(loc, status, sizeof(status));
    ck_assert_str_eq(status, "applied");

    const char *other = "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-echo\","
                        "\"payload\":{\"amount\":9}}";
    const char *keys[] = {sync_key, async_key};
    for (size_t i = 0; i < 2; i++) {
        char h[200];
        snprintf(h, sizeof(h), "Idempotency-Key: %s\r\n", keys[i]);
        httpc_response r = post(h, other);
        ck_assert_msg(r.status == 422, "key %s: %d %s", keys[i], r.status, r.body);
        ck_assert_str_eq(jstr(r.json, "type"), "/problems/idempotency-key-reused");
        httpc_free(&r);
        /* The same body under the same key is a retry: the first answer again. */
        r = post(h, i == 0 ? open : deposit);
        ck_assert_int_eq(r.status, i == 0 ? 201 : 200);
        expect_header(&r, "Idempotent-Replayed", "true");
        httpc_free(&r);
    }
    httpc_response r = get("/v1/aggregates/account/acc-echo?min_version=2", NULL);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    ck_assert_int_eq(jint(r.json, "state.balance"), 4);
    httpc_free(&r);
}
END_TEST

/* A body of about len bytes: an owner that long, or that many 0.1s (each 19 bytes in Kafka). */
static char *oversize_body(int i, const char *id)
{
    size_t n = i == 0 ? 1040000 : 100000;
    char *fill = malloc(n * 4 + 1), *f = fill;
    for (size_t k = 0; k < n; k++) {
        if (i == 0)
            *f++ = 'x';
        else
            f += sprintf(f, "%s0.1", k ? "," : "");
    }
    *f = '\0';
    char *body;
    if (i == 0)
        ck_assert_int_gt(asprintf(&body,
                                  "{\"type\":\"account.open\",\"aggregate_id\":\"%s\","
                                  "\"payload\":{\"owner\":\"%s\"}}",
                                  id, fill),
                         0);
    else
        ck_assert_int_gt(asprintf(&body,
                                  "{\"type\":\"document.create\",\"aggregate_id\":"
                                  "\"%s\",\"payload\":{\"a\":[%s]}}",
                                  id, fill),
                         0);
    free(fill);
    ck_assert_int_lt(strlen(body), 1048576); /* under the 1 MiB http.max_body of old */
    return body;
}

START_TEST(a_command_too_large_for_kafka_is_413_and_leaves_its_key_free)
{
    const char *ids[] = {"acc-huge", "doc-huge"};
    char *body = oversize_body(_i, ids[_i]);
    char h[64];
    snprintf(h, sizeof(h), "Idempotency-Key: huge-%d\r\n", _i);
    httpc_response r = post(h, body);
    free(body);
    ck_assert_msg(r.status == 413, "status %d", r.status);
    expect_header(&r, "Content-Type", "application/problem+json");
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/too-large");
    httpc_free(&r);
    /* The client sends a smaller one under the same key: nothing holds the key. */
    char small[160];
    snprintf(small, sizeof(small),
             _i == 0 ? "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":"
                       "{\"owner\":\"o\"}}"
                     : "{\"type\":\"document.create\",\"aggregate_id\":\"%s\",\"payload\":"
                       "{\"a\":[0.1]}}",
             ids[_i]);
    r = post(h, small);
    ck_assert_msg(r.status == 201, "status %d: %s", r.status, r.body);
    httpc_free(&r);
}
END_TEST

/*
 * A claim older than idempotency.inflight_timeout_s whose command was not decided (here: nobody
 * processes it) is taken over by a retry of its key, with the same command id, and the command
 * is applied once.
 */
START_TEST(stale_claim_is_taken_over_once)
{
    pid_t proc = open_with_processor("acc-stale");
    httpc_response r;
    const char *body = "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-stale\","
                       "\"payload\":{\"amount\":3}}";
    const char *async = "Idempotency-Key: stale-1\r\nPrefer: respond-async\r\n";
    /* No assertion while the processor is stopped: a failure must not leave it stopped. */
    ck_assert_int_eq(kill(proc, SIGSTOP), 0);
    httpc_response first = post(async, body);
    /* Retried as a client told Retry-After: 1 would, until the claim is stale (bounded). */
    long long start_us = ids_monotonic_us();
    int in_flight = 0;
    r = post(async, body);
    while (r.status == 409 && ids_monotonic_us() - start_us < 4000000LL * INFLIGHT_TIMEOUT_S) {
        in_flight++;
        httpc_free(&r);
        usleep(200000); /* the pace of a client retrying, not a wait for a state */
        r = post(async, body);
    }
    double took_s = (double)(ids_monotonic_us() - start_us) / 1e6;
    kill(proc, SIGCONT);
    ck_assert_int_eq(first.status, 202);
    ck_assert_int_gt(in_flight, 0); /* in flight while young */
    ck_assert_msg(r.status == 202, "status %d after %.1f s of retries: %s", r.status, took_s,
                  r.body);
    ck_assert_msg(took_s >= INFLIGHT_TIMEOUT_S - 1, "taken over after %.1f s", took_s);
    const char *id = jstr(first.json, "command_id");
    ck_assert_str_eq(jstr(r.json, "command_id"), id); /* taken over: the same command */
    httpc_free(&r);
    char loc[128], status[32];
    snprintf(loc, sizeof(loc), "/v1/commands/%s", id);
    wait_decided(loc, status, sizeof(status));
    ck_assert_str_eq(status, "applied");
    r = post("Idempotency-Key: stale-1\r\n", body);
    ck_assert_int_eq(r.status, 200);
    expect_header(&r, "Idempotent-Replayed", "true");
    ck_assert_str_eq(jstr(r.json, "command_id"), id);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    httpc_free(&r);
    httpc_free(&first);
    r = get("/v1/aggregates/account/acc-stale?min_version=2", NULL);
    ck_assert_int_eq(jint(r.json, "version"), 2);
    ck_assert_int_eq(jint(r.json, "state.balance"), 3); /* applied once */
    httpc_free(&r);
}
END_TEST

/*
 * A claim the processor marked abandoned (accepted longer than idempotency.abandon_after_s) is
 * still undecided: a retry of its key takes it over with the same command id, and it is applied
 * once (ADR 0020).
 */
START_TEST(abandoned_claim_is_taken_over_and_applied)
{
    httpc_response r = post(NULL, "{\"type\":\"account.open\",\"aggregate_id\":\"acc-ab\","
                                  "\"payload\":{\"owner\":\"ab\"}}");
    ck_assert_int_eq(r.status, 201);
    httpc_free(&r);
    sql("INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, aggregate_id, "
        "status, created_at, finished_at) VALUES ('6f1c1a4e-0000-4000-8000-000000000003', "
        "'default', 'abandoned-1', 'account.deposit', 'account', 'acc-ab', 'abandoned', now() - "
        "interval '2 days', now() - interval '1 day')");
    const char *body = "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-ab\","
                       "\"payload\":{\"amount\":4}}";
    r = post("Idempotency-Key: abandoned-1\r\n", body);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(r.json, "command_id"), "6f1c1a4e-0000-4000-8000-000000000003");
    ck_assert_int_eq(jint(r.json, "version"), 2);
    httpc_free(&r);
    r = get("/v1/commands/6f1c1a4e-0000-4000-8000-000000000003", NULL);
    ck_assert_str_eq(jstr(r.json, "status"), "applied");
    httpc_free(&r);
}
END_TEST

START_TEST(health_metrics_and_routes)
{
    httpc_response r = get("/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    r = get("/readyz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(json_is_true(json_object_get(r.json, "postgresql")));
    httpc_free(&r);
    ck_assert_int_ge(metric("gateway_replies_received_total"), 3);
    ck_assert_int_ge(metric("gateway_http_requests_total{status=\"201\"}"), 1);
    ck_assert_int_ge(metric("gateway_http_request_duration_seconds_count"), 5);
    /* The stages of a sync command: Kafka's confirmation, the reply, and the reply's transit. */
    long long produced = metric("gateway_commands_produced_total");
    ck_assert_int_ge(produced, 3);
    ck_assert_int_eq(metric("gateway_kafka_ack_seconds_count"), produced);
    ck_assert_int_eq(metric("gateway_reply_wait_seconds_count"),
                     metric("gateway_replies_received_total"));
    ck_assert_int_ge(metric("gateway_reply_transit_seconds_count"),
                     metric("gateway_replies_received_total"));
    r = get("/v1/nothing", NULL);
    ck_assert_int_eq(r.status, 404);
    httpc_free(&r);
    r = httpc_request(st.http_port, "DELETE", "/v1/commands", NULL, NULL, TIMEOUT_MS);
    ck_assert_int_eq(r.status, 405);
    httpc_free(&r);
}
END_TEST

/* How the route table answers paths and methods it does not serve (Allow NULL: not a 405). */
static const struct {
    const char *method, *path;
    int status;
    const char *allow;
} route_probes[] = {
    {"GET", "/healthz/", 404, NULL}, /* the path as sent: a trailing slash is another resource */
    {"HEAD", "/healthz", 200, NULL},
    {"POST", "/healthz", 405, "GET, HEAD"},
    {"GET", "/v1/commands", 405, "POST"},
    {"PUT", "/v1/aggregates/account/x", 405, "GET, HEAD"},
    {"TRACE", "/healthz", 405, "GET, HEAD"}, /* every method libevent parses reaches the router */
    {"OPTIONS", "/v1/commands", 405, "POST"},
    {"DELETE", "/v1/commands/x", 405, "GET, HEAD"},
    {"GET", "//v1//commands/not-a-uuid", 404, NULL},
    {"GET", "/v1/aggregates/account/a/b", 404, NULL},
    {"GET", "/v1/a/b/c/d/e/f/g/h/i", 404, NULL},
    {"GET", "/openapi.json/x", 404, NULL},
};

START_TEST(route_table_answers)
{
    httpc_response r = httpc_request(st.http_port, route_probes[_i].method, route_probes[_i].path,
                                     NULL, NULL, TIMEOUT_MS);
    ck_assert_msg(r.status == route_probes[_i].status, "%s %s: %d", route_probes[_i].method,
                  route_probes[_i].path, r.status);
    if (route_probes[_i].allow)
        expect_header(&r, "Allow", route_probes[_i].allow);
    if (r.status == 404)
        expect_header(&r, "Content-Type", "application/problem+json");
    httpc_free(&r);
}
END_TEST

/* GET /openapi.json is the document of the domains the gateway loaded; HEAD too; nothing else. */
START_TEST(openapi_document_served)
{
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    char err[512] = "";
    domain_registry *reg =
        domain_registry_load(dir && *dir ? dir : "schemas/domains", err, sizeof(err));
    ck_assert_msg(reg != NULL, "%s", err);
    json_t *want = openapi_build(reg, false);
    httpc_response r = get("/openapi.json", NULL);
    ck_assert_int_eq(r.status, 200);
    expect_header(&r, "Content-Type", "application/json");
    /* make run has auth.mode=off: no token is asked for, so the document declares none. */
    ck_assert_ptr_null(json_object_get(json_object_get(r.json, "components"), "securitySchemes"));
    const char *path, *method;
    json_t *item, *op;
    json_object_foreach(json_object_get(r.json, "paths"), path, item)
    {
        json_object_foreach(item, method, op)
        {
            ck_assert_msg(!json_object_get(op, "security"), "%s %s has security", method, path);
            json_t *responses = json_object_get(op, "responses");
            ck_assert_msg(!json_object_get(responses, "401") && !json_object_get(responses, "403"),
                          "%s %s answers 401 or 403", method, path);
        }
    }
    ck_assert_msg(json_equal(r.json, want),
                  "GET /openapi.json is not the shipped domains' document");
    httpc_free(&r);
    r = httpc_request(st.http_port, "HEAD", "/openapi.json", NULL, NULL, TIMEOUT_MS);
    ck_assert_int_eq(r.status, 200);
    expect_header(&r, "Content-Type", "application/json");
    ck_assert_uint_eq(r.body_len, 0);
    httpc_free(&r);
    r = httpc_request(st.http_port, "POST", "/openapi.json", NULL, "{}", TIMEOUT_MS);
    ck_assert_int_eq(r.status, 405);
    expect_header(&r, "Allow", "GET, HEAD");
    httpc_free(&r);
    json_decref(want);
    domain_registry_free(reg);
}
END_TEST

START_TEST(sigint_leaves_no_process)
{
    int status = stack_stop(&st);
    ck_assert_msg(status >= 0, "run.sh did not exit within 60 s of SIGINT");
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run.sh status %d", status);
    char who[4200], needle[64];
    ck_assert_msg(!stack_process_mentions(st.run_dir, who, sizeof(who)), "left behind: %s", who);
    snprintf(needle, sizeof(needle), "--http.port=%d", st.http_port);
    ck_assert_msg(!stack_process_mentions(needle, who, sizeof(who)), "left behind: %s", who);
    snprintf(needle, sizeof(needle), "port=%d", st.pg_port);
    ck_assert_msg(!stack_process_mentions(needle, who, sizeof(who)), "left behind: %s", who);
    ck_assert_msg(stack_logs_clean(&st), "a sanitizer reported an error in a service log");
}
END_TEST

int main(void)
{
    char gateway_args[64];
    snprintf(gateway_args, sizeof(gateway_args), "--idempotency.inflight_timeout_s=%d",
             INFLIGHT_TIMEOUT_S);
    setenv("GATEWAY_ARGS", gateway_args, 1);
    if (stack_start(&st, false) != 0) {
        stack_stop(&st);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("e2e");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, open_account_sync_created);
    tcase_add_test(tc, deposit_sync_bumps_version);
    tcase_add_test(tc, deposit_async_then_applied);
    tcase_add_test(tc, an_optimistic_answer_names_the_command);
    tcase_add_test(tc, overdraw_rejected_422);
    tcase_add_test(tc, prefer_wait_is_applied_and_answers_vary);
    tcase_add_loop_test(tc, bad_request_400_nothing_produced, 0,
                        (int)(sizeof(bad_requests) / sizeof(bad_requests[0])));
    tcase_add_test(tc, read_aggregate_etag_and_304);
    tcase_add_loop_test(tc, if_none_match_weak_lists, 0,
                        (int)(sizeof(if_none_match) / sizeof(if_none_match[0])));
    tcase_add_test(tc, if_match_mismatch_412);
    tcase_add_loop_test(tc, if_match_star_and_lists, 0,
                        (int)(sizeof(if_match) / sizeof(if_match[0])));
    tcase_add_test(tc, if_match_race_one_success_per_version);
    tcase_add_test(tc, document_lifecycle);
    tcase_add_test(tc, cart_lifecycle_from_a_domain_file);
    tcase_add_test(tc, idempotency_key_replays_the_first_answer);
    tcase_add_test(tc, idempotency_key_with_another_body_is_422);
    tcase_add_test(tc, idempotency_key_in_flight_is_409);
    tcase_add_test(tc, stale_claim_is_taken_over_once);
    tcase_add_test(tc, an_assigned_key_echoed_with_another_body_is_422);
    tcase_add_test(tc, an_accepted_record_that_loses_a_race_is_written_again);
    tcase_add_test(tc, a_sync_request_whose_wait_ends_first_is_recorded);
    tcase_add_loop_test(tc, a_command_too_large_for_kafka_is_413_and_leaves_its_key_free, 0, 2);
    tcase_add_test(tc, abandoned_claim_is_taken_over_and_applied);
    tcase_add_test(tc, health_metrics_and_routes);
    tcase_add_test(tc, openapi_document_served);
    tcase_add_loop_test(tc, route_table_answers, 0,
                        (int)(sizeof(route_probes) / sizeof(route_probes[0])));
    suite_add_tcase(s, tc);
    int failed = check_run(s, CK_FORK_GETENV);

    /* Shutdown runs in this process, which is run.sh's parent and can reap it. */
    Suite *s2 = suite_create("e2e-shutdown");
    TCase *tc2 = tcase_create("shutdown");
    tcase_set_timeout(tc2, 90);
    tcase_add_test(tc2, sigint_leaves_no_process);
    suite_add_tcase(s2, tc2);
    failed += check_run(s2, CK_NOFORK);
    if (failed)
        stack_show_logs(&st);
    stack_stop(&st);
    if (!failed) /* keep the logs and the cluster of a failed run for a look */
        stack_remove(&st);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
