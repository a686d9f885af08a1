/*
 * test_tenants.c: the API with authentication on (auth.mode=jwt, HS256, scopes required, a rate
 * limit), as separate processes: a processor, a projector and a gateway. Requests without a
 * valid token get 401 with a bearer challenge and change nothing; a token without the route's
 * scope gets 403; tenants see only their own commands, aggregates and lists, even under the
 * same aggregate id and the same Idempotency-Key; a tenant over its rate gets 429 with
 * Retry-After while another is served; ids and payloads shaped like SQL injection are stored
 * verbatim; a configuration that cannot authenticate stops the gateway at start, naming the key;
 * W3C trace context reaches the command record, the domain event and both services' logs.
 */
#include "checkrun.h"
#include "cluster.h"
#include "httpc.h"
#include "pgtest.h"
#include "stack.h"

#include <check.h>
#include <glob.h>
#include <jwt.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 20000
#define RATE       5 /* requests a second per tenant, for the rate-limit test's gateway */

static const char secret[] = "tenants-test-secret-0123456789abcdef";
static cluster cl;
static int port;
static PGconn *db;

/* "Authorization: Bearer <token>\r\n" for tenant with scopes (space-separated), exp from now. */
static char *bearer(const char *tenant, const char *scopes, long long exp_from_now)
{
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_new(&j), 0);
    char claims[512];
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"test\",\"tenant\":\"%s\",\"scope\":\"%s\",\"iss\":\"test-idp\","
             "\"aud\":\"cqrs\",\"exp\":%lld}",
             tenant, scopes, (long long)time(NULL) + exp_from_now);
    ck_assert_int_eq(jwt_add_grants_json(j, claims), 0);
    ck_assert_int_eq(
        jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)), 0);
    char *token = jwt_encode_str(j);
    jwt_free(j);
    char *h = NULL;
    ck_assert_int_gt(asprintf(&h, "Authorization: Bearer %s\r\n", token), 0);
    free(token);
    return h;
}

static const char all_scopes[] = "commands:write commands:read aggregates:read";

static httpc_response call(const char *tenant, const char *method, const char *path,
                           const char *more_headers, const char *body)
{
    char *auth = tenant ? bearer(tenant, all_scopes, 300) : strdup("");
    char *headers = NULL;
    ck_assert_int_gt(asprintf(&headers, "%s%s", auth, more_headers ? more_headers : ""), -1);
    httpc_response r = httpc_request(port, method, path, headers, body, TIMEOUT_MS);
    free(headers);
    free(auth);
    return r;
}

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static long long count_commands(void)
{
    return pgtest_int(db, "SELECT count(*) FROM commands");
}

START_TEST(no_valid_token_is_401_with_a_challenge_and_changes_nothing)
{
    const char *body =
        "{\"type\":\"account.open\",\"aggregate_id\":\"nobody\",\"payload\":{\"owner\":\"x\"}}";
    long long before = count_commands();
    char *expired = bearer("acme", all_scopes, -3600);
    char other_secret[256];
    {
        jwt_t *j = NULL;
        ck_assert_int_eq(jwt_new(&j), 0);
        jwt_add_grant(j, "tenant", "acme");
        jwt_add_grant_int(j, "exp", (long)time(NULL) + 300);
        const char *k = "another-secret-of-enough-length-0123456789";
        jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)k, (int)strlen(k));
        char *t = jwt_encode_str(j);
        snprintf(other_secret, sizeof(other_secret), "Authorization: Bearer %s\r\n", t);
        free(t);
        jwt_free(j);
    }
    /* Attacks on a valid token: "alg": "none" with its signature dropped, and its payload swapped
       for one naming another tenant (the signature is acme's). */
    char *acme = bearer("acme", all_scopes, 300), *globex = bearer("globex", all_scopes, 300);
    char *a_dot1 = strchr(acme, '.'), *a_dot2 = strchr(a_dot1 + 1, '.');
    char *g_dot1 = strchr(globex, '.'), *g_dot2 = strchr(g_dot1 + 1, '.');
    char alg_none[1024], swapped[1024];
    snprintf(alg_none, sizeof(alg_none),
             "Authorization: Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.%.*s.\r\n",
             (int)(a_dot2 - a_dot1 - 1), a_dot1 + 1);
    snprintf(swapped, sizeof(swapped), "%.*s.%.*s%s", (int)(a_dot1 - acme), acme,
             (int)(g_dot2 - g_dot1 - 1), g_dot1 + 1, a_dot2);
    struct {
        const char *headers;
        const char *challenge;
    } cases[] = {
        {alg_none, "error=\"invalid_token\""},
        {swapped, "error=\"invalid_token\""},
        {"", "Bearer realm=\"cqrs\""},
        {"Authorization: Basic YWRtaW46YWRtaW4=\r\n", "Bearer realm=\"cqrs\""},
        {"Authorization: Bearer not.a.token\r\n", "error=\"invalid_token\""},
        {expired, "error=\"invalid_token\""},
        {other_secret, "error=\"invalid_token\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        httpc_response r =
            httpc_request(port, "POST", "/v1/commands", cases[i].headers, body, TIMEOUT_MS);
        ck_assert_msg(r.status == 401, "case %zu: %d", i, r.status);
        char challenge[300], ctype[100];
        ck_assert_ptr_nonnull(httpc_header(&r, "WWW-Authenticate", challenge, sizeof(challenge)));
        ck_assert_msg(strstr(challenge, cases[i].challenge), "case %zu: %s", i, challenge);
        ck_assert_ptr_nonnull(httpc_header(&r, "Content-Type", ctype, sizeof(ctype)));
        ck_assert_str_eq(ctype, "application/problem+json");
        ck_assert_str_eq(jstr(r.json, "type"), "/problems/unauthorized");
        httpc_free(&r);
        r = httpc_request(port, "GET", "/v1/aggregates/account", cases[i].headers, NULL,
                          TIMEOUT_MS);
        ck_assert_int_eq(r.status, 401);
        httpc_free(&r);
    }
    free(expired);
    free(acme);
    free(globex);
    ck_assert_int_eq(count_commands(), before);
    /* The operations routes need no token. */
    const char *open_paths[] = {"/healthz", "/readyz", "/metrics", "/openapi.json"};
    for (size_t i = 0; i < 4; i++) {
        httpc_response r = httpc_request(port, "GET", open_paths[i], NULL, NULL, TIMEOUT_MS);
        ck_assert_msg(r.status == 200, "%s: %d", open_paths[i], r.status);
        httpc_free(&r);
    }
}
END_TEST

START_TEST(a_token_without_the_routes_scope_is_403)
{
    char *reader = bearer("acme", "commands:read aggregates:read", 300);
    httpc_response r = httpc_request(
        port, "POST", "/v1/commands", reader,
        "{\"type\":\"account.open\",\"aggregate_id\":\"scoped\",\"payload\":{\"owner\":\"x\"}}",
        TIMEOUT_MS);
    ck_assert_int_eq(r.status, 403);
    char challenge[300];
    ck_assert_ptr_nonnull(httpc_header(&r, "WWW-Authenticate", challenge, sizeof(challenge)));
    ck_assert_str_eq(
        challenge, "Bearer realm=\"cqrs\", error=\"insufficient_scope\", scope=\"commands:write\"");
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/forbidden");
    httpc_free(&r);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM commands WHERE aggregate_id = 'scoped'"),
                     0);
    /* The same token may read. */
    r = httpc_request(port, "GET", "/v1/aggregates/account", reader, NULL, TIMEOUT_MS);
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    free(reader);
}
END_TEST

/* A sync write; returns the status and copies the command id. */
static int write_cmd(const char *tenant, const char *key, const char *type, const char *agg,
                     const char *payload, char *command_id)
{
    char body[512], headers[160] = "Prefer: wait=10\r\n";
    snprintf(body, sizeof(body), "{\"type\":\"%s\",\"aggregate_id\":\"%s\",\"payload\":%s}", type,
             agg, payload);
    if (key)
        snprintf(headers, sizeof(headers), "Prefer: wait=10\r\nIdempotency-Key: %s\r\n", key);
    httpc_response r = call(tenant, "POST", "/v1/commands", headers, body);
    int status = r.status;
    if (command_id)
        snprintf(command_id, 40, "%s", jstr(r.json, "command_id"));
    char replayed[16];
    if (httpc_header(&r, "Idempotent-Replayed", replayed, sizeof(replayed)))
        status = -status; /* marks a replay for the caller */
    httpc_free(&r);
    return status;
}

/* The balance tenant reads for account id once the projection has version v; -1 if not 200. */
static long long balance(const char *tenant, const char *id, int v)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/aggregates/account/%s?min_version=%d", id, v);
    httpc_response r = call(tenant, "GET", path, NULL, NULL);
    long long b =
        r.status == 200
            ? json_integer_value(json_object_get(json_object_get(r.json, "state"), "balance"))
            : -1;
    httpc_free(&r);
    return b;
}

START_TEST(tenants_see_only_their_own_data)
{
    char a_open[40], b_open[40], a_dep[40];
    /* The same aggregate id in two tenants: two aggregates, neither "already exists". */
    ck_assert_int_eq(
        write_cmd("acme", NULL, "account.open", "shared-1", "{\"owner\":\"a\"}", a_open), 201);
    ck_assert_int_eq(
        write_cmd("globex", NULL, "account.open", "shared-1", "{\"owner\":\"b\"}", b_open), 201);
    ck_assert_int_eq(
        write_cmd("acme", NULL, "account.deposit", "shared-1", "{\"amount\":10}", a_dep), 200);
    ck_assert_int_eq(
        write_cmd("globex", NULL, "account.deposit", "shared-1", "{\"amount\":99}", NULL), 200);
    ck_assert_int_eq(balance("acme", "shared-1", 2), 10);
    ck_assert_int_eq(balance("globex", "shared-1", 2), 99);
    /* An aggregate only acme has is not found for globex. */
    ck_assert_int_eq(
        write_cmd("acme", NULL, "account.open", "acme-only", "{\"owner\":\"a\"}", NULL), 201);
    ck_assert_int_eq(balance("acme", "acme-only", 1), 0);
    httpc_response r = call("globex", "GET", "/v1/aggregates/account/acme-only", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    httpc_free(&r);
    /* A write by globex to acme's aggregate does not reach it: for globex it does not exist. */
    ck_assert_int_eq(
        write_cmd("globex", NULL, "account.deposit", "acme-only", "{\"amount\":1}", NULL), 422);
    ck_assert_int_eq(balance("acme", "acme-only", 1), 0);
    /* Command records: each tenant reads its own, and another's id is not found. */
    char path[128];
    snprintf(path, sizeof(path), "/v1/commands/%s", a_dep);
    r = call("acme", "GET", path, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(r.json, "status"), "applied");
    httpc_free(&r);
    r = call("globex", "GET", path, NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    httpc_free(&r);
    /* Lists: globex's has shared-1 only. */
    r = call("globex", "GET", "/v1/aggregates/account?limit=100", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    ck_assert_int_eq(json_array_size(items), 1);
    ck_assert_str_eq(jstr(json_array_get(items, 0), "aggregate_id"), "shared-1");
    httpc_free(&r);
}
END_TEST

/* A key reused across tenants is two requests: neither is a replay of the other. */
START_TEST(an_idempotency_key_belongs_to_its_tenant)
{
    ck_assert_int_eq(write_cmd("acme", NULL, "account.open", "keyed", "{\"owner\":\"a\"}", NULL),
                     201);
    ck_assert_int_eq(write_cmd("globex", NULL, "account.open", "keyed", "{\"owner\":\"b\"}", NULL),
                     201);
    char a_id[40], b_id[40], again[40];
    ck_assert_int_eq(
        write_cmd("acme", "same-key", "account.deposit", "keyed", "{\"amount\":5}", a_id), 200);
    ck_assert_int_eq(
        write_cmd("globex", "same-key", "account.deposit", "keyed", "{\"amount\":5}", b_id), 200);
    ck_assert_str_ne(a_id, b_id);
    /* Within a tenant the key still replays. */
    ck_assert_int_eq(
        write_cmd("globex", "same-key", "account.deposit", "keyed", "{\"amount\":5}", again), -200);
    ck_assert_str_eq(again, b_id);
    ck_assert_int_eq(balance("acme", "keyed", 2), 5);
    ck_assert_int_eq(balance("globex", "keyed", 2), 5);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(DISTINCT tenant) FROM commands "
                                    "WHERE idempotency_key = 'same-key'"),
                     2);
}
END_TEST

/* SQL only through parameters: what looks like injection is data, stored verbatim. */
START_TEST(injection_shaped_input_is_stored_verbatim)
{
    const char *ids[] = {"x'; DROP TABLE aggregates; --", "\" OR 1=1 --", "a\\'b$$c$1 ;--",
                         "1); DELETE FROM commands WHERE (1=1"};
    const char *key = "'; DELETE FROM commands; --";
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        json_t *body = json_pack("{s:s, s:s, s:{s:s}}", "type", "account.open", "aggregate_id",
                                 ids[i], "payload", "owner", ids[i]);
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        char headers[200];
        /* A quoted string (RFC 8941): the key may hold spaces and semicolons. */
        snprintf(headers, sizeof(headers), "Prefer: wait=10\r\nIdempotency-Key: \"%s%zu\"\r\n", key,
                 i);
        httpc_response r = call("acme", "POST", "/v1/commands", headers, text);
        free(text);
        ck_assert_msg(r.status == 201, "%s: %d %s", ids[i], r.status, r.body);
        /* Location is a URI: the id percent-encoded, and it leads back to the aggregate. */
        char location[400], path[440];
        ck_assert_ptr_nonnull(httpc_header(&r, "Location", location, sizeof(location)));
        ck_assert_msg(strspn(location, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789-._~/%") == strlen(location),
                      "Location not encoded: %s", location);
        httpc_free(&r);
        snprintf(path, sizeof(path), "%s?min_version=1", location);
        r = call("acme", "GET", path, NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(jstr(r.json, "aggregate_id"), ids[i]);
        httpc_free(&r);
        const char *v[] = {ids[i]};
        PGresult *res = PQexecParams(db,
                                     "SELECT count(*) FROM aggregates WHERE tenant = 'acme' AND "
                                     "id = $1 AND state->>'owner' = $1",
                                     1, NULL, v, NULL, NULL, 0);
        ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        ck_assert_str_eq(PQgetvalue(res, 0, 0), "1");
        PQclear(res);
    }
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM commands WHERE idempotency_key LIKE "
                                    "'''; DELETE FROM commands; --_'"),
                     4);
    /* A list's filter values are parameters, and its sort key a name checked against the
       projection's columns. */
    size_t found = 0;
    for (int i = 0; i < 100 && found != 1; i++) { /* once the projector has the row */
        if (i > 0)
            usleep(100000);
        httpc_response r = call(
            "acme", "GET",
            "/v1/aggregates/account?owner=x%27%3B%20DROP%20TABLE%20aggregates%3B%20--", NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        found = json_array_size(json_object_get(r.json, "items"));
        httpc_free(&r);
    }
    ck_assert_int_eq(found, 1);
    httpc_response r = call(
        "acme", "GET", "/v1/aggregates/account?sort=id%3B%20DROP%20TABLE%20aggregates", NULL, NULL);
    ck_assert_int_eq(r.status, 400);
    httpc_free(&r);
    ck_assert_int_ge(pgtest_int(db, "SELECT count(*) FROM aggregates"), 4);
}
END_TEST

/*
 * A gateway of its own with ratelimit.rate=RATE (burst RATE): a tenant asking faster gets 429
 * with Retry-After; another tenant is served meanwhile; after a pause the first is served again.
 */
START_TEST(a_tenant_over_its_rate_gets_429_and_others_are_served)
{
    int main_port = port;
    port = stack_free_port();
    char flag_port[32], flag_rate[40], flag_key[420];
    snprintf(flag_port, sizeof(flag_port), "--http.port=%d", port);
    snprintf(flag_rate, sizeof(flag_rate), "--ratelimit.rate=%d", RATE);
    snprintf(flag_key, sizeof(flag_key), "--auth.key_file=%s/jwt-secret", cl.dir);
    const char *gw[] = {flag_port, "--auth.mode=jwt", "--auth.algorithm=HS256",
                        flag_key,  flag_rate,         "--workers=1",
                        NULL};
    pid_t pid = cluster_start(&cl, "command-gateway", 1, gw);
    ck_assert(cluster_wait_ready(port, 60000));
    int ok = 0, limited = 0;
    char retry[16] = "";
    const int asked = 3 * RATE;
    for (int i = 0; i < asked; i++) {
        httpc_response r = call("flood", "GET", "/v1/aggregates/account", NULL, NULL);
        if (r.status == 200) {
            ok++;
        } else if (r.status == 429) {
            limited++;
            ck_assert_ptr_nonnull(httpc_header(&r, "Retry-After", retry, sizeof(retry)));
            ck_assert_str_eq(jstr(r.json, "type"), "/problems/rate-limited");
        }
        httpc_free(&r);
    }
    /* The burst, plus what the bucket refilled while the requests ran. */
    ck_assert_int_ge(ok, RATE);
    ck_assert_int_gt(limited, 0);
    ck_assert_int_eq(ok + limited, asked);
    ck_assert_int_ge(atoi(retry), 1);
    httpc_response r = call("acme", "GET", "/v1/aggregates/account", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    /* The bucket refills: flood is served again within a few seconds. */
    int status = 429;
    for (int waited = 0; waited < 10000 && status == 429; waited += 200) {
        r = call("flood", "GET", "/v1/aggregates/account", NULL, NULL);
        status = r.status;
        httpc_free(&r);
        if (status == 429) /* a probe is a request too: probing faster keeps the bucket empty */
            usleep(200000);
    }
    ck_assert_int_eq(status, 200);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    port = main_port;
}
END_TEST

/* A configuration that cannot authenticate is a start-up error naming its key. */
START_TEST(bad_auth_configuration_is_a_startup_error)
{
    char short_secret[420], flag_short[440];
    snprintf(short_secret, sizeof(short_secret), "%s/short-secret", cl.dir);
    FILE *f = fopen(short_secret, "w");
    ck_assert_ptr_nonnull(f);
    fputs("too-short\n", f);
    fclose(f);
    snprintf(flag_short, sizeof(flag_short), "--auth.key_file=%s", short_secret);
    struct {
        const char *flags[3];
        const char *want;
    } cases[] = {
        {{"--auth.mode=jwt", NULL}, "auth.key_file: required"},
        {{"--auth.mode=maybe", NULL}, "auth.mode: 'maybe'"},
        {{"--auth.mode=jwt", "--auth.algorithm=HS384", NULL}, "auth.algorithm: 'HS384'"},
        {{"--auth.mode=jwt", "--auth.algorithm=HS256", flag_short}, "at least 32"},
        {{"--auth.mode=jwt", "--auth.key_file=/nonexistent/key.pem", NULL}, "auth.key_file: "},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *extra[] = {"--http.port=0", cases[i].flags[0], cases[i].flags[1],
                               cases[i].flags[2], NULL};
        pid_t gw = cluster_start(&cl, "command-gateway", (int)(10 + i), extra);
        int rc = -1;
        ck_assert_int_eq(waitpid(gw, &rc, 0), gw);
        ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) != 0, "case %zu: not a failed exit", i);
        char path[480], line[1024];
        snprintf(path, sizeof(path), "%s/command-gateway-%zu.log", cl.dir, 10 + i);
        FILE *log = fopen(path, "r");
        ck_assert_ptr_nonnull(log);
        bool named = false;
        while (fgets(line, sizeof(line), log))
            named = named || strstr(line, cases[i].want);
        fclose(log);
        ck_assert_msg(named, "case %zu: no start-up error with \"%s\" in %s", i, cases[i].want,
                      path);
    }
}
END_TEST

/* ---- trace context ---- */

#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TRACE_ID    "4bf92f3577b34da6a3ce929d0e0e4736"

/* One text column of the first row of sql (parameter $1 = arg); "" when NULL or no row. */
static void query_text(const char *sql, const char *arg, char *out, size_t len)
{
    const char *v[] = {arg};
    PGresult *r = PQexecParams(db, sql, 1, NULL, v, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    snprintf(out, len, "%s", PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

/* The value of header name of the first event on the events topic whose ce_subject is subject. */
static bool event_header(const char *subject, const char *name, char *out, size_t len)
{
    char errstr[256], topic[80], group[80];
    snprintf(topic, sizeof(topic), "%sevents", cl.prefix);
    static int readers;
    snprintf(group, sizeof(group), "%strace-reader-%d", cl.prefix, readers++);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", cl.bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "%s", errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    bool found = false;
    for (int waited = 0; waited < 30000 && !found; waited += 200) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        rd_kafka_headers_t *h = NULL;
        const void *v;
        size_t vlen;
        if (!m->err && rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(h, "ce_subject", &v, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            vlen == strlen(subject) && memcmp(v, subject, vlen) == 0) {
            found = true;
            if (rd_kafka_header_get_last(h, name, &v, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR)
                snprintf(out, len, "%.*s", (int)vlen, (const char *)v);
            else
                out[0] = 0;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return found;
}

static bool log_mentions(const char *service, const char *needle)
{
    char path[320];
    snprintf(path, sizeof(path), "%s/%s-0.log", cl.dir, service);
    return file_mentions(path, needle);
}

/*
 * A client's traceparent and tracestate: the gateway takes part (same trace, a span of its own,
 * carried in the command's Kafka headers and kept in the command record), the processor too (its
 * span is the parent of the domain event, which carries the tracestate on), and both services'
 * log lines about the command name the trace. Without a traceparent the gateway starts a trace.
 */
START_TEST(trace_context_reaches_the_record_the_event_and_both_logs)
{
    char id[40];
    httpc_response r =
        call("acme", "POST", "/v1/commands",
             "Prefer: wait=10\r\ntraceparent: " TRACEPARENT "\r\ntracestate: congo=t61rcWkgMzE\r\n",
             "{\"type\":\"account.open\",\"aggregate_id\":\"traced-1\","
             "\"payload\":{\"owner\":\"t\"}}");
    ck_assert_int_eq(r.status, 201);
    snprintf(id, sizeof(id), "%s", jstr(r.json, "command_id"));
    httpc_free(&r);
    char record[64], event[64], state[600], on_topic[64], state_on_topic[600];
    query_text("SELECT traceparent FROM commands WHERE id = $1", id, record, sizeof(record));
    ck_assert_msg(strncmp(record, "00-" TRACE_ID "-", 36) == 0, "record: %s", record);
    ck_assert_str_eq(record + 52, "-01");
    ck_assert_str_ne(record, TRACEPARENT); /* the gateway's own span */
    query_text("SELECT traceparent FROM outbox WHERE command_id = $1", id, event, sizeof(event));
    ck_assert_msg(strncmp(event, "00-" TRACE_ID "-", 36) == 0, "event: %s", event);
    ck_assert_str_ne(event, record); /* the processor's own span */
    query_text("SELECT tracestate FROM outbox WHERE command_id = $1", id, state, sizeof(state));
    ck_assert_str_eq(state, "congo=t61rcWkgMzE");
    ck_assert(event_header("traced-1", "ce_traceparent", on_topic, sizeof(on_topic)));
    ck_assert_str_eq(on_topic, event);
    ck_assert(event_header("traced-1", "ce_tracestate", state_on_topic, sizeof(state_on_topic)));
    ck_assert_str_eq(state_on_topic, "congo=t61rcWkgMzE");
    ck_assert(log_mentions("command-gateway", TRACE_ID));
    ck_assert(log_mentions("state-processor", TRACE_ID));

    r = call("acme", "POST", "/v1/commands", "Prefer: wait=10\r\ntraceparent: 00-zz\r\n",
             "{\"type\":\"account.open\",\"aggregate_id\":\"traced-2\","
             "\"payload\":{\"owner\":\"t\"}}");
    ck_assert_int_eq(r.status, 201);
    snprintf(id, sizeof(id), "%s", jstr(r.json, "command_id"));
    httpc_free(&r);
    query_text("SELECT traceparent FROM commands WHERE id = $1", id, record, sizeof(record));
    ck_assert_int_eq(strlen(record), 55);
    ck_assert_int_ne(strncmp(record + 3, TRACE_ID, 32), 0);
    ck_assert_str_eq(record + 52, "-00");
}
END_TEST

/* `state-processor migrate` (the deployment's migration job) sets a database up and exits. */
START_TEST(migrate_mode_sets_up_a_database_and_exits)
{
    char dbname[64], sql[160], flag[700];
    snprintf(dbname, sizeof(dbname), "tenants_migrate_%d", (int)getpid());
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    PQclear(PQexec(db, sql));
    const char *base = getenv("CQRS_TEST_PG_CONNINFO");
    ck_assert_ptr_nonnull(base);
    snprintf(flag, sizeof(flag), "--pg.conninfo=%s dbname=%s", base, dbname);
    const char *build = getenv("CQRS_BUILD") ? getenv("CQRS_BUILD") : "build";
    char bin[300];
    snprintf(bin, sizeof(bin), "%s/state-processor", build);
    for (int run = 0; run < 2; run++) { /* the second finds it up to date */
        pid_t pid = fork();
        if (pid == 0) {
            execl(bin, "state-processor", "migrate", flag, "--log.level=error", (char *)NULL);
            _exit(127);
        }
        int rc = -1;
        ck_assert_int_eq(waitpid(pid, &rc, 0), pid);
        ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "run %d: status %d", run, rc);
    }
    char ci[600];
    snprintf(ci, sizeof(ci), "%s dbname=%s", base, dbname);
    PGconn *m = PQconnectdb(ci);
    ck_assert_int_eq(PQstatus(m), CONNECTION_OK);
    glob_t files;
    ck_assert_int_eq(glob("schemas/migrations/*.sql", 0, NULL, &files), 0);
    ck_assert_int_eq(pgtest_int(m, "SELECT count(*) FROM schema_migrations"),
                     (long long)files.gl_pathc);
    globfree(&files);
    ck_assert_int_eq(pgtest_int(m, "SELECT count(*) FROM pg_tables WHERE tablename IN "
                                   "('commands', 'outbox', 'projection_account')"),
                     3);
    PQfinish(m);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s", dbname);
    PQclear(PQexec(db, sql));
}
END_TEST

/*
 * Prefer: wait=0 ends the wait for the result, not for Kafka: 202 once Kafka has the command. When
 * the result comes back before Kafka's confirmation does (a loaded broker), it is the answer.
 */
START_TEST(prefer_wait_0_is_202_once_kafka_has_the_command)
{
    httpc_response r = call("acme", "POST", "/v1/commands", "Prefer: wait=0\r\n",
                            "{\"type\":\"account.open\",\"aggregate_id\":\"wait-0\","
                            "\"payload\":{\"owner\":\"w\"}}");
    if (r.status == 201) {
        ck_assert_str_eq(jstr(r.json, "status"), "applied");
        httpc_free(&r);
        return;
    }
    ck_assert_msg(r.status == 202, "%d %s", r.status, r.body);
    char location[128];
    ck_assert_ptr_nonnull(httpc_header(&r, "Location", location, sizeof(location)));
    httpc_free(&r);
    bool applied = false;
    for (int i = 0; i < 100 && !applied; i++) {
        r = call("acme", "GET", location, NULL, NULL);
        applied = r.status == 200 && strcmp(jstr(r.json, "status"), "applied") == 0;
        httpc_free(&r);
        if (!applied)
            usleep(100000);
    }
    ck_assert(applied);
}
END_TEST

int main(void)
{
    if (cluster_init(&cl, "tenants") != 0)
        return EXIT_FAILURE;
    char key_file[400];
    snprintf(key_file, sizeof(key_file), "%s/jwt-secret", cl.dir);
    FILE *f = fopen(key_file, "w");
    if (!f || fputs(secret, f) < 0 || fclose(f) != 0)
        return EXIT_FAILURE;
    port = stack_free_port();
    char flag_port[32], flag_key[420];
    snprintf(flag_port, sizeof(flag_port), "--http.port=%d", port);
    snprintf(flag_key, sizeof(flag_key), "--auth.key_file=%s", key_file);
    const char *gw[] = {flag_port,
                        "--auth.mode=jwt",
                        "--auth.algorithm=HS256",
                        flag_key,
                        "--auth.issuer=test-idp",
                        "--auth.audience=cqrs",
                        "--auth.scopes=true",
                        "--log.level=debug", /* a line per command, with its trace id */
                        NULL};
    const char *proc[] = {"--log.level=debug", NULL};
    pid_t pids[3];
    pids[0] = cluster_start(&cl, "state-processor", 0, proc);
    pids[1] = cluster_start(&cl, "projector", 0, NULL);
    pids[2] = cluster_start(&cl, "command-gateway", 0, gw);
    int failed = 1;
    if (cluster_wait_ready(port, 60000)) {
        db = PQconnectdb(cl.conninfo);
        Suite *s = suite_create("tenants");
        TCase *tc = tcase_create("tenants");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, no_valid_token_is_401_with_a_challenge_and_changes_nothing);
        tcase_add_test(tc, a_token_without_the_routes_scope_is_403);
        tcase_add_test(tc, tenants_see_only_their_own_data);
        tcase_add_test(tc, an_idempotency_key_belongs_to_its_tenant);
        tcase_add_test(tc, injection_shaped_input_is_stored_verbatim);
        tcase_add_test(tc, a_tenant_over_its_rate_gets_429_and_others_are_served);
        tcase_add_test(tc, bad_auth_configuration_is_a_startup_error);
        tcase_add_test(tc, trace_context_reaches_the_record_the_event_and_both_logs);
        tcase_add_test(tc, migrate_mode_sets_up_a_database_and_exits);
        tcase_add_test(tc, prefer_wait_0_is_202_once_kafka_has_the_command);
        suite_add_tcase(s, tc);
        failed = check_run(s, CK_NOFORK); /* the services are this process's children */
        PQfinish(db);
    } else {
        fprintf(stderr, "the services were not ready within 60 s\n");
    }
    return cluster_finish(&cl, pids, 3, failed) ? EXIT_FAILURE : EXIT_SUCCESS;
}
