/*
 * test_projector.c: the projector against a real PostgreSQL and Kafka (the mock cluster of
 * `make test`, or the broker in CQRS_TEST_KAFKA_BOOTSTRAP). Each test gets a fresh database and
 * its own topics; a processor and a projector run in-process on one event loop, commands go in,
 * and the projection tables are checked against the aggregates table. Crafted events (older
 * versions, malformed ones) are produced straight to the events topic.
 */
#include "checkrun.h"
#include "pgtest.h"
#include "core/rfc3339.h"
#include "loop/dbsetup.h"
#include "domain/domain.h"
#include "domain/envelope.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "processor/processor.h"
#include "domain/projection.h"
#include "projector/projector.h"
#include "stack.h"
#include "httpc.h"

#include <check.h>
#include <event2/event.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 30000

static struct event_base *base;
static PGconn *db, *listener;
static char conninfo[1024];
static char prefix[64];
static processor_config cfg;  /* the processor's */
static processor_config jcfg; /* the projector's */
static config_props kprops;
static processor *proc;
static projector *proj;
static kafka_producer *prod;
static int delivered, delivery_errors;
static int last_partition;
static long long last_offset;

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)arg;
    if (d->err) {
        delivery_errors++;
        return;
    }
    delivered++;
    last_partition = d->partition;
    last_offset = d->offset;
}

static void run_for(int ms)
{
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static char *vsql(const char *fmt, va_list ap)
{
    static char sql[8192];
    vsnprintf(sql, sizeof(sql), fmt, ap);
    return sql;
}

/* First column of the first row as a number; -1 when there is no row or it is NULL. */
static long long q_int(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *sql = vsql(fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    long long v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* First column of the first row as text (caller frees); "(none)" without a row, "(null)". */
static char *q_text(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *sql = vsql(fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    char *v = strdup(!PQntuples(r)          ? "(none)"
                     : PQgetisnull(r, 0, 0) ? "(null)"
                                            : PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void exec_sql(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *sql = vsql(fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
}

/* Runs the loop until the query yields want, for at most timeout_ms. */
static bool wait_for(long long want, int timeout_ms, const char *fmt, ...)
{
    char sql[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (q_int("%s", sql) == want)
            return true;
        run_for(50);
    }
    return false;
}

/* Notifications on cqrs_projection received since the last call, appended to got (may be NULL). */
static int drain_notifies(json_t *got)
{
    int n = 0;
    ck_assert(PQconsumeInput(listener));
    PGnotify *nf;
    while ((nf = PQnotifies(listener))) {
        ck_assert_str_eq(nf->relname, PROJECTOR_CHANNEL);
        json_t *j = json_loads(nf->extra, 0, NULL);
        ck_assert_msg(json_is_object(j), "payload %s is not a JSON object", nf->extra);
        if (got)
            json_array_append(got, j);
        json_decref(j);
        PQfreemem(nf);
        n++;
    }
    return n;
}

static void make_props(config_props *p)
{
    const char *bs = getenv("CQRS_TEST_KAFKA_BOOTSTRAP");
    ck_assert_msg(bs && *bs, "CQRS_TEST_KAFKA_BOOTSTRAP is not set (make test sets it)");
    config_props_set(p, "bootstrap.servers", bs);
    const char *mode = getenv("CQRS_TEST_KAFKA_MODE");
    if (!mode || strcmp(mode, "real") != 0) {
        /* The mock cluster holds each fetch for the full fetch.wait.max.ms, and a restarted
           member of a group may wait for the old one's session to time out. */
        config_props_set(p, "fetch.wait.max.ms", "5");
        config_props_set(p, "session.timeout.ms", "6000");
    }
}

static void load_config(const config_row *table, processor_config *c)
{
    char err[512];
    config_props ignored = {0};
    char *argv[] = {"test_projector", NULL};
    memset(c, 0, sizeof(*c));
    ck_assert_msg(config_load(table, c, &ignored, 1, argv, err, sizeof(err)) == CONFIG_LOADED, "%s",
                  err);
    config_props_free(&ignored);
    free(c->pg_conninfo);
    c->pg_conninfo = strdup(conninfo);
    free(c->topic_prefix);
    c->topic_prefix = strdup(prefix);
    c->batch_max = 100;
    c->retry_max_ms = 500;
}

static void start_projector(void)
{
    char err[512];
    proj = projector_new(base, &jcfg, &kprops, err, sizeof(err));
    ck_assert_msg(proj != NULL, "projector_new: %s", err);
}

static void stop_projector(void)
{
    projector_free(proj);
    proj = NULL;
}

static void setup(void)
{
    log_init("test_projector", getenv("TEST_LOG_DEBUG") ? LOG_INFO : LOG_WARN);
    char dbname[64], sql[256];
    snprintf(dbname, sizeof(dbname), "projector_test_%d", (int)getpid());
    snprintf(prefix, sizeof(prefix), "j%d-", (int)getpid());
    pgtest_create_db(dbname, conninfo, sizeof(conninfo));

    load_config(processor_config_table, &cfg);
    free(cfg.group_id);
    snprintf(sql, sizeof(sql), "%sprocessors", prefix);
    cfg.group_id = strdup(sql);
    load_config(projector_config_table, &jcfg);
    char err[512];
    /* What both mains do before their loop: migrations, then the projection tables. */
    ck_assert_msg(dbsetup_apply(&jcfg, err, sizeof(err)) == 0, "%s", err);

    db = PQconnectdb(conninfo);
    ck_assert(PQstatus(db) == CONNECTION_OK);
    listener = PQconnectdb(conninfo);
    ck_assert(PQstatus(listener) == CONNECTION_OK);
    PQclear(PQexec(listener, "LISTEN " PROJECTOR_CHANNEL));

    memset(&kprops, 0, sizeof(kprops));
    make_props(&kprops);
    base = event_base_new();
    prod = kafka_producer_new(base, &kprops, on_delivery, NULL, err, sizeof(err));
    ck_assert_msg(prod != NULL, "%s", err);
    delivered = delivery_errors = 0;
    proc = processor_new(base, &cfg, &kprops, err, sizeof(err));
    ck_assert_msg(proc != NULL, "processor_new: %s", err);
    start_projector();
}

static void teardown(void)
{
    projector_free(proj);
    processor_free(proc);
    kafka_producer_free(prod);
    event_base_free(base);
    PQfinish(listener);
    PQfinish(db);
    config_free(processor_config_table, &cfg);
    config_free(projector_config_table, &jcfg);
    config_props_free(&kprops);
}

static const char *topic(const char *name)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s%s", prefix, name);
    return buf;
}

/* Produces one message and waits for its delivery (last_partition, last_offset). */
static void produce(const char *t, const char *key, const char *value, size_t len, const header *h,
                    size_t nh)
{
    int before = delivered;
    ck_assert_int_eq(kafka_produce(prod, t, -1, key, strlen(key), value, len, h, nh, NULL),
                     KAFKA_OK);
    for (int i = 0; i < 400 && delivered == before; i++)
        run_for(25);
    ck_assert_int_eq(delivered, before + 1);
}

static void send_cmd(const char *type, const char *agg, const char *payload)
{
    char id[IDS_UUID_LEN];
    ids_uuid(id);
    envelope e = {.id = id,
                  .source = "/test",
                  .type = (char *)type,
                  .subject = (char *)agg,
                  .tenant = "default",
                  .expected_version = -1,
                  .reply_partition = -1};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    produce(topic("commands"), agg, payload, strlen(payload), h, nh);
}

/* Produces an event as the relay would, with the given version and state (JSON text). */
static void send_event(const char *key, const char *type, const char *id, long long version,
                       const char *state)
{
    char *event_id = envelope_event_id("default", type, id, version);
    char now[RFC3339_LEN], cmd[IDS_UUID_LEN];
    rfc3339_now(now);
    ids_uuid(cmd);
    char evtype[64];
    snprintf(evtype, sizeof(evtype), "%s.tested", type);
    envelope e = {.id = event_id,
                  .source = "/test",
                  .type = evtype,
                  .subject = (char *)id,
                  .time = now,
                  .tenant = "default",
                  .expected_version = -1,
                  .reply_partition = -1};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    char value[2048];
    snprintf(value, sizeof(value),
             "{\"command_id\":\"%s\",\"command_type\":\"%s.test\",\"aggregate_type\":\"%s\","
             "\"aggregate_id\":\"%s\",\"version\":%lld,\"payload\":{},\"state\":%s}",
             cmd, type, type, id, version, state);
    produce(topic("events"), key, value, strlen(value), h, nh);
    free(event_id);
}

/* Waits until the projector stored a position past (partition, offset). */
static bool projected_past(int partition, long long offset)
{
    return wait_for(1, WAIT_MS,
                    "SELECT count(*) FROM consumer_offsets WHERE group_id = '%sprojector' AND "
                    "topic = '%s' AND partition = %d AND next_offset > %lld",
                    prefix, topic("events"), partition, offset);
}

/* Waits until the projector's stored positions add up to every event the relay published. */
static bool caught_up(void)
{
    if (!wait_for(0, WAIT_MS, "SELECT count(*) FROM outbox WHERE published_at IS NULL"))
        return false;
    return wait_for(q_int("SELECT count(*) FROM outbox"), WAIT_MS,
                    "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = "
                    "'%sprojector'",
                    prefix);
}

/* A checksum of every projection table: any changed row, column or timestamp changes it. */
static char *checksum(void)
{
    return q_text("SELECT md5((SELECT string_agg(row_to_json(p)::text, ',' ORDER BY tenant, id) "
                  "FROM projection_account p) || '|' || (SELECT COALESCE(string_agg(row_to_json("
                  "p)::text, ',' ORDER BY tenant, id), '') FROM projection_document p) || '|' || "
                  "(SELECT COALESCE(string_agg(row_to_json(p)::text, ',' ORDER BY tenant, id), '') "
                  "FROM projection_cart p))");
}

/* The SQL of a declared column's value taken from a.state, written independently of C. */
static void expected_value_sql(const projection_column *c, char *out, size_t len)
{
    char path[256] = "{"; /* "/a/b" -> "{a,b}"; the shipped pointers hold no escapes */
    size_t n = 1;
    for (const char *p = c->pointer + 1; *p && n < sizeof(path) - 2; p++)
        path[n++] = (char)(*p == '/' ? ',' : *p);
    path[n++] = '}';
    path[n] = '\0';
    char at[300];
    snprintf(at, sizeof(at), "(a.state #>> '%s')", path);
    int w = 0;
    switch (c->type) {
    case PROJECTION_TEXT:
        w = snprintf(out, len, "CASE WHEN jsonb_typeof(a.state #> '%s') = 'string' THEN %s END",
                     path, at);
        break;
    case PROJECTION_TIMESTAMPTZ:
        w = snprintf(out, len,
                     "CASE WHEN jsonb_typeof(a.state #> '%s') = 'string' THEN %s::timestamptz END",
                     path, at);
        break;
    case PROJECTION_BOOLEAN:
        w = snprintf(out, len,
                     "CASE WHEN jsonb_typeof(a.state #> '%s') = 'boolean' THEN %s::boolean END",
                     path, at);
        break;
    case PROJECTION_NUMERIC:
        w = snprintf(out, len,
                     "CASE WHEN jsonb_typeof(a.state #> '%s') = 'number' THEN %s::numeric END",
                     path, at);
        break;
    case PROJECTION_BIGINT:
        w = snprintf(out, len,
                     "CASE WHEN jsonb_typeof(a.state #> '%s') = 'number' AND %s::numeric = "
                     "trunc(%s::numeric) THEN %s::numeric::bigint END",
                     path, at, at, at);
        break;
    }
    ck_assert_msg(w >= 0 && (size_t)w < len, "the SQL of column %s does not fit", c->name);
}

/*
 * Rows where the projection and the aggregates disagree, over every aggregate type: missing on
 * one side, another version, state or deleted flag, or a declared column that is not the value
 * taken from the state.
 */
static long long mismatches(const domain_registry *reg)
{
    long long total = 0;
    for (size_t i = 0; i < domain_registry_aggregate_count(reg); i++) {
        const char *type = domain_registry_aggregate_name(reg, i);
        const projection *p = domain_registry_projection(reg, type);
        char cols[4096] = "";
        for (size_t c = 0; c < p->ncols; c++) {
            char expr[1024], term[1300];
            expected_value_sql(&p->cols[c], expr, sizeof(expr));
            snprintf(term, sizeof(term), " OR p.\"%s\" IS DISTINCT FROM (%s)", p->cols[c].name,
                     expr);
            strncat(cols, term, sizeof(cols) - strlen(cols) - 1);
        }
        long long n = q_int("SELECT count(*) FROM (SELECT * FROM aggregates WHERE type = '%s') a "
                            "FULL JOIN \"%s\" p ON p.tenant = a.tenant AND p.id = a.id "
                            "WHERE a.id IS NULL OR p.id IS NULL OR p.version <> a.version OR "
                            "p.state IS DISTINCT FROM a.state OR p.deleted <> a.deleted%s",
                            type, p->table, cols);
        total += n;
    }
    return total;
}

static domain_registry *load_domains(void)
{
    char err[512];
    domain_registry *reg = domain_registry_load(jcfg.schemas_dir, err, sizeof(err));
    ck_assert_msg(reg != NULL, "%s", err);
    return reg;
}

/* Opens, deposits, withdrawals, a rejected one, a close; documents; a cart. */
static void mixed_run(void)
{
    send_cmd("account.open", "acc-1", "{\"owner\":\"ada\"}");
    send_cmd("account.deposit", "acc-1", "{\"amount\":100}");
    send_cmd("account.withdraw", "acc-1", "{\"amount\":30}");
    send_cmd("account.withdraw", "acc-1", "{\"amount\":1000}"); /* rejected: overdrawn */
    send_cmd("account.open", "acc-2", "{\"owner\":\"bob\"}");
    send_cmd("account.close", "acc-2", "{}");
    send_cmd("document.create", "doc-1", "{\"title\":\"draft\",\"body\":{\"words\":3}}");
    send_cmd("document.patch", "doc-1", "{\"title\":\"final\",\"body\":null}");
    send_cmd("document.create", "doc-2", "{\"title\":42}"); /* not a string: title NULL */
    send_cmd("document.create", "doc-3", "{\"title\":\"gone\"}");
    send_cmd("document.delete", "doc-3", "{}");
    send_cmd("cart.create", "cart-1", "{\"customer\":\"cy\",\"currency\":\"EUR\"}");
    send_cmd("cart.add_item", "cart-1", "{\"sku\":\"A-1\",\"quantity\":2,\"unit_price\":150}");
    send_cmd("cart.add_item", "cart-1", "{\"sku\":\"B-2\",\"quantity\":1,\"unit_price\":99}");
    send_cmd("cart.remove_item", "cart-1", "{\"sku\":\"A-1\"}");
    send_cmd("cart.check_out", "cart-1", "{}");
}

START_TEST(projection_equals_the_aggregates_after_a_mixed_run)
{
    domain_registry *reg = load_domains();
    mixed_run();
    ck_assert(wait_for(5, WAIT_MS, "SELECT version FROM aggregates WHERE id = 'cart-1'"));
    ck_assert(caught_up());
    ck_assert_int_eq(mismatches(reg), 0);
    /* Not vacuous: every aggregate is there, with the values the commands made. */
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates"), 6);
    ck_assert_int_eq(q_int("SELECT version FROM projection_account WHERE id = 'acc-1'"), 3);
    ck_assert_int_eq(q_int("SELECT balance FROM projection_account WHERE id = 'acc-1'"), 70);
    char *s = q_text("SELECT status FROM projection_account WHERE id = 'acc-2'");
    ck_assert_str_eq(s, "closed");
    free(s);
    s = q_text("SELECT title FROM projection_document WHERE id = 'doc-1'");
    ck_assert_str_eq(s, "final");
    free(s);
    s = q_text("SELECT title FROM projection_document WHERE id = 'doc-2'");
    ck_assert_str_eq(s, "(null)");
    free(s);
    ck_assert_int_eq(q_int("SELECT count(*) FROM projection_document WHERE id = 'doc-3' AND "
                           "deleted AND state IS NULL AND title IS NULL AND version = 2"),
                     1);
    s = q_text("SELECT status || ' ' || customer || ' ' || currency || ' ' || "
               "(state->'items'->'B-2'->>'quantity') || ' ' || (state->'items' ? 'A-1')::text "
               "FROM projection_cart WHERE id = 'cart-1'");
    ck_assert_str_eq(s, "checked_out cy EUR 1 false");
    free(s);
    ck_assert_int_eq(q_int("SELECT count(*) FROM projection_skipped"), 0);

    /* One notification per row changed, naming it; every aggregate's final version among them. */
    run_for(200);
    json_t *got = json_array();
    int n = drain_notifies(got);
    ck_assert_int_ge(n, 6);
    ck_assert_int_le(n, 15); /* at most one per applied command */
    PGresult *r = PQexec(db, "SELECT type, id, version FROM aggregates");
    for (int row = 0; row < PQntuples(r); row++) {
        bool seen = false;
        for (size_t i = 0; i < json_array_size(got) && !seen; i++) {
            const json_t *j = json_array_get(got, i);
            seen =
                strcmp(json_string_value(json_object_get(j, "tenant")), "default") == 0 &&
                strcmp(json_string_value(json_object_get(j, "aggregate_type")),
                       PQgetvalue(r, row, 0)) == 0 &&
                strcmp(json_string_value(json_object_get(j, "aggregate_id")),
                       PQgetvalue(r, row, 1)) == 0 &&
                json_integer_value(json_object_get(j, "version")) == atoll(PQgetvalue(r, row, 2));
        }
        ck_assert_msg(seen, "no notification for %s/%s at version %s", PQgetvalue(r, row, 0),
                      PQgetvalue(r, row, 1), PQgetvalue(r, row, 2));
    }
    PQclear(r);
    json_decref(got);
    domain_registry_free(reg);
}
END_TEST

START_TEST(delivering_the_events_again_changes_nothing)
{
    domain_registry *reg = load_domains();
    mixed_run();
    ck_assert(wait_for(5, WAIT_MS, "SELECT version FROM aggregates WHERE id = 'cart-1'"));
    ck_assert(caught_up());
    stop_projector();
    char *before = checksum();
    long long versions = q_int("SELECT sum(version) FROM projection_account");
    long long positions = q_int(
        "SELECT sum(next_offset) FROM consumer_offsets WHERE group_id = '%sprojector'", prefix);
    ck_assert_int_gt(positions, 10);
    drain_notifies(NULL);

    /* The group starts over: every event is delivered a second time. */
    exec_sql("UPDATE consumer_offsets SET next_offset = 0 WHERE group_id = '%sprojector'", prefix);
    start_projector();
    ck_assert(wait_for(positions, WAIT_MS,
                       "SELECT sum(next_offset) FROM consumer_offsets WHERE group_id = "
                       "'%sprojector'",
                       prefix));
    run_for(300);
    char *after = checksum();
    ck_assert_str_eq(before, after);
    ck_assert_int_eq(q_int("SELECT sum(version) FROM projection_account"), versions);
    ck_assert_int_eq(mismatches(reg), 0);
    ck_assert_int_eq(drain_notifies(NULL), 0); /* no row changed, so nothing notified */
    free(before);
    free(after);
    domain_registry_free(reg);
}
END_TEST

START_TEST(an_older_event_after_a_newer_one_is_a_no_op)
{
    send_cmd("account.open", "acc-3", "{\"owner\":\"dee\"}");
    send_cmd("account.deposit", "acc-3", "{\"amount\":10}");
    send_cmd("account.deposit", "acc-3", "{\"amount\":20}");
    ck_assert(wait_for(3, WAIT_MS, "SELECT version FROM projection_account WHERE id = 'acc-3'"));
    run_for(200);
    drain_notifies(NULL);
    char *before = checksum();

    /* Version 2 again, and version 3 again with another state: neither is newer than the row. */
    send_event("acc-3", "account", "acc-3", 2,
               "{\"owner\":\"dee\",\"balance\":999,\"status\":\"open\"}");
    ck_assert(projected_past(last_partition, last_offset));
    send_event("acc-3", "account", "acc-3", 3,
               "{\"owner\":\"eve\",\"balance\":555,\"status\":\"open\"}");
    ck_assert(projected_past(last_partition, last_offset));
    char *after = checksum();
    ck_assert_str_eq(before, after);
    ck_assert_int_eq(q_int("SELECT balance FROM projection_account WHERE id = 'acc-3'"), 30);
    ck_assert_int_eq(drain_notifies(NULL), 0);

    /* A newer one does apply: the guard compares versions, it does not freeze the row. */
    send_event("acc-3", "account", "acc-3", 4,
               "{\"owner\":\"dee\",\"balance\":31,\"status\":\"open\"}");
    ck_assert(wait_for(4, WAIT_MS, "SELECT version FROM projection_account WHERE id = 'acc-3'"));
    ck_assert_int_eq(q_int("SELECT balance FROM projection_account WHERE id = 'acc-3'"), 31);
    run_for(200);
    ck_assert_int_eq(drain_notifies(NULL), 1);
    free(before);
    free(after);
}
END_TEST

START_TEST(malformed_events_are_recorded_and_the_partition_flows)
{
    /* Same key, so the same partition: the good event after them must still project. */
    header no_version[] = {{"ce_id", "x", 1}, {"ce_type", "t", 1}};
    produce(topic("events"), "acc-9", "{}", 2, no_version, 2);
    long long first = last_offset;
    char *id = envelope_event_id("default", "account", "acc-9", 1);
    header ok[] = {{"ce_specversion", "1.0", 3}, {"ce_id", id, strlen(id)},
                   {"ce_source", "/test", 5},    {"ce_type", "account.tested", 14},
                   {"ce_subject", "acc-9", 5},   {"ce_tenant", "default", 7}};
    produce(topic("events"), "acc-9", "not json", 8, ok, 6);
    const char unknown[] = "{\"aggregate_type\":\"spaceship\",\"aggregate_id\":\"acc-9\","
                           "\"version\":1,\"state\":{}}";
    produce(topic("events"), "acc-9", unknown, strlen(unknown), ok, 6);
    const char versionless[] = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"acc-9\","
                               "\"state\":{}}";
    produce(topic("events"), "acc-9", versionless, strlen(versionless), ok, 6);
    const char binary[] = "\xff\x00\xfe{";
    header bad_bytes[] = {{"ce_specversion", "\xc3\x28", 2}, {"x-raw", "\x00\xff", 2}};
    produce(topic("events"), "acc-9", binary, 4, bad_bytes, 2);
    long long last_bad = last_offset;
    int partition = last_partition;
    ck_assert_int_eq(last_bad - first, 4);
    send_event("acc-9", "account", "acc-9", 1,
               "{\"owner\":\"zed\",\"balance\":0,\"status\":\"open\"}");
    free(id);

    ck_assert(wait_for(1, WAIT_MS, "SELECT version FROM projection_account WHERE id = 'acc-9'"));
    char *s = q_text("SELECT string_agg(reason, ' ' ORDER BY kafka_offset) FROM projection_skipped "
                     "WHERE group_id = '%sprojector' AND topic = '%s' AND partition = %d",
                     prefix, topic("events"), partition);
    ck_assert_str_eq(s, "bad-envelope malformed-value unknown-aggregate bad-version bad-envelope");
    free(s);
    ck_assert_int_eq(q_int("SELECT min(kafka_offset) FROM projection_skipped"), first);
    /* Kept byte for byte, headers included, even what is not UTF-8. */
    s = q_text(
        "SELECT encode(value, 'hex') || ' ' || encode(key, 'escape') || ' ' || "
        "(headers->0->>'name_hex' IS NULL)::text || ' ' || (headers->0->>'value_hex') || "
        "' ' || (headers->1->>'value_hex') FROM projection_skipped WHERE kafka_offset = %lld",
        last_bad);
    ck_assert_str_eq(s, "ff00fe7b acc-9 true c328 00ff");
    free(s);
    s = q_text("SELECT convert_from(value, 'UTF8') || ' ' || (headers @> "
               "'[{\"name\":\"ce_subject\",\"value\":\"acc-9\"}]')::text || ' ' || detail FROM "
               "projection_skipped WHERE reason = 'unknown-aggregate'");
    ck_assert_str_eq(s, "{\"aggregate_type\":\"spaceship\",\"aggregate_id\":\"acc-9\","
                        "\"version\":1,\"state\":{}} true spaceship");
    free(s);
    char *owner = q_text("SELECT owner FROM projection_account WHERE id = 'acc-9'");
    ck_assert_str_eq(owner, "zed");
    free(owner);
}
END_TEST

START_TEST(an_event_postgresql_refuses_is_isolated_and_recorded)
{
    /* A constraint only one event violates: PostgreSQL refuses the data (class 23), not the
       server; the other events of its batch must still project. */
    exec_sql("ALTER TABLE projection_account ADD CONSTRAINT no_mallory CHECK (owner <> "
             "'mallory')");
    stop_projector(); /* so that the three events arrive in one batch */
    send_event("iso", "account", "acc-a", 1,
               "{\"owner\":\"amy\",\"balance\":0,\"status\":\"open\"}");
    send_event("iso", "account", "acc-m", 1,
               "{\"owner\":\"mallory\",\"balance\":0,\"status\":\"open\"}");
    long long bad = last_offset;
    send_event("iso", "account", "acc-b", 1,
               "{\"owner\":\"ben\",\"balance\":0,\"status\":\"open\"}");
    start_projector();
    ck_assert(projected_past(last_partition, last_offset));
    ck_assert_int_eq(q_int("SELECT count(*) FROM projection_account WHERE id IN ('acc-a', "
                           "'acc-b')"),
                     2);
    ck_assert_int_eq(q_int("SELECT count(*) FROM projection_account WHERE id = 'acc-m'"), 0);
    char *s = q_text("SELECT reason || ' ' || (detail LIKE '%%no_mallory%%')::text || ' ' || "
                     "kafka_offset FROM projection_skipped");
    char want[128];
    snprintf(want, sizeof(want), "rejected-by-postgresql true %lld", bad);
    ck_assert_str_eq(s, want);
    free(s);
}
END_TEST

START_TEST(offsets_commit_with_the_rows)
{
    send_cmd("account.open", "acc-5", "{\"owner\":\"fay\"}");
    send_cmd("account.deposit", "acc-5", "{\"amount\":5}");
    ck_assert(wait_for(2, WAIT_MS, "SELECT version FROM aggregates WHERE id = 'acc-5'"));
    ck_assert(caught_up());
    stop_projector();

    /* Tampered with while stopped: re-applying an event already projected would undo this. */
    exec_sql("UPDATE projection_account SET version = 0, state = '{\"tampered\": true}' WHERE "
             "id = 'acc-5'");
    send_cmd("account.open", "acc-6", "{\"owner\":\"gil\"}");
    ck_assert(wait_for(1, WAIT_MS, "SELECT version FROM aggregates WHERE id = 'acc-6'"));
    start_projector();
    ck_assert(caught_up()); /* nothing missing: the positions cover every published event */
    ck_assert_int_eq(q_int("SELECT version FROM projection_account WHERE id = 'acc-6'"), 1);
    ck_assert_int_eq(q_int("SELECT version FROM projection_account WHERE id = 'acc-5' AND "
                           "state = '{\"tampered\": true}'"),
                     0); /* nothing re-applied */

    /* A transaction that cannot commit moves neither rows nor offsets; retried, never skipped. */
    exec_sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "RAISE EXCEPTION 'not now'; END $$");
    exec_sql("CREATE TRIGGER refuse BEFORE INSERT ON projection_account FOR EACH ROW EXECUTE "
             "FUNCTION refuse()");
    long long positions = q_int(
        "SELECT sum(next_offset) FROM consumer_offsets WHERE group_id = '%sprojector'", prefix);
    send_cmd("account.open", "acc-7", "{\"owner\":\"hal\"}");
    ck_assert(wait_for(0, WAIT_MS, "SELECT count(*) FROM outbox WHERE published_at IS NULL"));
    run_for(2000);
    ck_assert_int_eq(q_int("SELECT count(*) FROM projection_account WHERE id = 'acc-7'"), 0);
    ck_assert_int_eq(
        q_int("SELECT sum(next_offset) FROM consumer_offsets WHERE group_id = '%sprojector'",
              prefix),
        positions);
    ck_assert_int_eq(q_int("SELECT count(*) FROM projection_skipped"), 0);
    exec_sql("DROP TRIGGER refuse ON projection_account");
    ck_assert(wait_for(1, WAIT_MS, "SELECT version FROM projection_account WHERE id = 'acc-7'"));
    ck_assert(caught_up());
}
END_TEST

/* Offsets stored under a cluster that is gone count another log: the projector reads this one
   from its beginning rather than from where the old log ended. */
START_TEST(offsets_of_another_cluster_are_not_trusted)
{
    stop_projector();
    for (int i = 0; i < 4; i++) { /* one key: the four events share a partition, offsets 0-3 */
        char id[16];
        snprintf(id, sizeof(id), "oc-%d", i);
        send_event("oc", "account", id, 1, "{\"owner\":\"x\",\"balance\":0,\"status\":\"open\"}");
    }
    ck_assert_int_eq(last_offset, 3);
    exec_sql("INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, cluster_id) "
             "SELECT '%sprojector', '%s', p, 3, 'a-cluster-that-is-gone' "
             "FROM generate_series(0, 63) AS p",
             prefix, topic("events"));
    start_projector();
    ck_assert_msg(
        wait_for(4, WAIT_MS, "SELECT count(*) FROM projection_account WHERE id LIKE 'oc-%%'"),
        "events of the new log were skipped");
    ck_assert(projected_past(last_partition, 3));
    ck_assert_int_eq(q_int("SELECT count(*) FROM consumer_offsets WHERE group_id = "
                           "'%sprojector' AND partition = %d AND cluster_id <> "
                           "'a-cluster-that-is-gone'",
                           prefix, last_partition),
                     1);
}
END_TEST

/* A projector freed while its batch is in PostgreSQL: freeing the connection answers the batch's
   queries, to a projector still whole; nothing commits, and the next projector projects it. */
START_TEST(a_projector_freed_mid_transaction_commits_nothing_and_resumes)
{
    exec_sql("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "PERFORM pg_sleep(1); RETURN NEW; END $$");
    exec_sql("CREATE TRIGGER slow BEFORE INSERT ON projection_account FOR EACH ROW EXECUTE "
             "FUNCTION slow()");
    send_cmd("account.open", "fr-1", "{\"owner\":\"kim\"}");
    ck_assert_msg(wait_for(1, WAIT_MS,
                           "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                           "AND datname = current_database()"),
                  "the projector's batch never reached the trigger");
    stop_projector();
    exec_sql("DROP TRIGGER slow ON projection_account"); /* waits for the abandoned batch */
    ck_assert_int_eq(q_int("SELECT count(*) FROM projection_account WHERE id = 'fr-1'"), 0);
    start_projector();
    ck_assert(wait_for(1, WAIT_MS, "SELECT version FROM projection_account WHERE id = 'fr-1'"));
    ck_assert(caught_up());
}
END_TEST

/* Runs build/state-processor with args (NULL-terminated), output to log; returns its pid. */
static pid_t spawn_binary(const char *const *args, const char *log)
{
    const char *build = getenv("CQRS_BUILD") ? getenv("CQRS_BUILD") : "build";
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/state-processor", build);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = fopen(log, "w");
        if (f) {
            dup2(fileno(f), 1);
            dup2(fileno(f), 2);
        }
        execv(bin, (char *const *)args);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid, int timeout_ms)
{
    int status = 0;
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

START_TEST(the_subcommand_runs_serves_health_and_stops_on_sigterm)
{
    char log[128];
    snprintf(log, sizeof(log), "/tmp/test_projector_%d.log", (int)getpid());
    const char *help[] = {"state-processor", "project", "--help", NULL};
    ck_assert_int_eq(wait_exit(spawn_binary(help, log), 10000), 0);
    FILE *f = fopen(log, "r");
    ck_assert(f != NULL);
    char text[16384] = "";
    size_t got = fread(text, 1, sizeof(text) - 1, f);
    text[got] = '\0';
    fclose(f);
    ck_assert_msg(strstr(text, "state-processor project") && strstr(text, "--projector.group"),
                  "%s", text);
    ck_assert_msg(!strstr(text, "--group.id"), "the processor's group key is listed: %s", text);

    /* The process projects what the in-process processor produces. */
    stop_projector();
    int port = stack_free_port();
    char a[6][1100];
    snprintf(a[0], sizeof(a[0]), "--pg.conninfo=%s", conninfo);
    snprintf(a[1], sizeof(a[1]), "--kafka.bootstrap.servers=%s",
             config_props_get(&kprops, "bootstrap.servers"));
    snprintf(a[2], sizeof(a[2]), "--topic.prefix=%s", prefix);
    snprintf(a[3], sizeof(a[3]), "--http.port=%d", port);
    const char *fetch = config_props_get(&kprops, "fetch.wait.max.ms");
    snprintf(a[4], sizeof(a[4]), "--kafka.fetch.wait.max.ms=%s", fetch ? fetch : "500");
    const char *session = config_props_get(&kprops, "session.timeout.ms");
    snprintf(a[5], sizeof(a[5]), "--kafka.session.timeout.ms=%s", session ? session : "45000");
    const char *run[] = {"state-processor", "project", a[0], a[1], a[2], a[3], a[4], a[5], NULL};
    pid_t pid = spawn_binary(run, log);
    send_cmd("account.open", "acc-8", "{\"owner\":\"ivy\"}");
    bool ready = false;
    for (int i = 0; i < 300 && !ready; i++) {
        run_for(100); /* the in-process processor keeps working meanwhile */
        httpc_response r = httpc_request(port, "GET", "/readyz", NULL, NULL, 1000);
        ready = r.status == 200;
        httpc_free(&r);
    }
    ck_assert_msg(ready, "the projector never answered /readyz with 200 (log %s)", log);
    ck_assert(wait_for(1, WAIT_MS, "SELECT version FROM projection_account WHERE id = 'acc-8'"));
    httpc_response m = httpc_request(port, "GET", "/metrics", NULL, NULL, 2000);
    ck_assert_int_eq(m.status, 200);
    ck_assert_msg(strstr(m.body, "projector_events_total{outcome=\"projected\"} 1") &&
                      strstr(m.body, "projector_batches_total 1"),
                  "%s", m.body);
    httpc_free(&m);
    kill(pid, SIGTERM);
    ck_assert_int_eq(wait_exit(pid, 20000), 0);
    unlink(log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("projector");
    TCase *tc = tcase_create("projector");
    tcase_set_timeout(tc, 180);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, projection_equals_the_aggregates_after_a_mixed_run);
    tcase_add_test(tc, delivering_the_events_again_changes_nothing);
    tcase_add_test(tc, an_older_event_after_a_newer_one_is_a_no_op);
    tcase_add_test(tc, malformed_events_are_recorded_and_the_partition_flows);
    tcase_add_test(tc, an_event_postgresql_refuses_is_isolated_and_recorded);
    tcase_add_test(tc, offsets_commit_with_the_rows);
    tcase_add_test(tc, offsets_of_another_cluster_are_not_trusted);
    tcase_add_test(tc, a_projector_freed_mid_transaction_commits_nothing_and_resumes);
    tcase_add_test(tc, the_subcommand_runs_serves_health_and_stops_on_sigterm);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
