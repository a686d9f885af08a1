/*
 * test_processor.c: the state-processor against a real PostgreSQL and Kafka (the mock cluster
 * of `make test`, or any broker in CQRS_TEST_KAFKA_BOOTSTRAP). Each test gets a fresh database
 * and its own topics, runs a processor in-process on an event loop, produces commands to it and
 * checks what lands in PostgreSQL and on the topics.
 */
#include "checkrun.h"
#include "pgtest.h"
#include "waitfor.h"
#include "domain/envelope.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "ops/lagcmd.h"
#include "core/log.h"
#include "core/metrics.h"
#include "pg/pgconn.h"
#include "pg/pgmigrate.h"
#include "processor/processor.h"
#include "loop/txloop.h"

#include <check.h>
#include <event2/event.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct event_base *base;
static PGconn *db;
static char conninfo[1024];
static char prefix[64];
static processor_config cfg;
static config_props kprops;
static processor *proc;
static kafka_producer *prod;
static int delivered, delivery_errors;

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)arg;
    d->err ? delivery_errors++ : delivered++;
}

static void run_for(int ms)
{
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* First column of the first row as a number; -1 when there is no row or it is NULL. */
static long long q_int(const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    long long v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* Runs the loop until the query yields want, for at most timeout_ms. */
static bool wait_for(long long want, int timeout_ms, const char *sql)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (q_int("%s", sql) == want)
            return true;
        run_for(50);
    }
    return false;
}

static void make_props(config_props *p)
{
    const char *bs = getenv("CQRS_TEST_KAFKA_BOOTSTRAP");
    ck_assert_msg(bs && *bs, "CQRS_TEST_KAFKA_BOOTSTRAP is not set (make test sets it)");
    config_props_set(p, "bootstrap.servers", bs);
    /* The mock cluster holds each fetch for the full fetch.wait.max.ms; a broker does not. */
    const char *mode = getenv("CQRS_TEST_KAFKA_MODE");
    if (!mode || strcmp(mode, "real") != 0) {
        config_props_set(p, "fetch.wait.max.ms", "5");
        /* The mock cluster may not honour a LeaveGroup: a restarted member of the same group
           then waits for the old one's session to time out. */
        config_props_set(p, "session.timeout.ms", "6000");
    }
}

/* Group ids are made unique per test process: a group is shared state in the cluster. */
static processor *start_processor(const char *group)
{
    free(cfg.group_id);
    char unique[128];
    snprintf(unique, sizeof(unique), "%s%s", prefix, group);
    cfg.group_id = strdup(unique);
    char err[512];
    processor *p = processor_new(base, &cfg, &kprops, err, sizeof(err));
    ck_assert_msg(p != NULL, "processor_new: %s", err);
    return p;
}

static void setup(void)
{
    log_init("test_processor",
             getenv("TEST_LOG_DEBUG")
                 ? LOG_INFO
                 : LOG_WARN); /* the processor's info lines would drown the output */
    char dbname[64];
    snprintf(dbname, sizeof(dbname), "proc_test_%d", (int)getpid());
    snprintf(prefix, sizeof(prefix), "p%d-", (int)getpid());
    pgtest_create_db(dbname, conninfo, sizeof(conninfo));
    char err[512];
    const char *mig = getenv("CQRS_MIGRATIONS_DIR");
    mig = mig ? mig : "schemas/migrations";
    ck_assert_msg(pgmigrate_apply(conninfo, mig, err, sizeof(err)) == 0, "%s", err);
    db = PQconnectdb(conninfo);
    ck_assert(PQstatus(db) == CONNECTION_OK);

    /* Start from the processor's own defaults, as the binary would. */
    memset(&cfg, 0, sizeof(cfg));
    memset(&kprops, 0, sizeof(kprops));
    char *argv[] = {"test_processor", NULL};
    ck_assert_int_eq(config_load(processor_config_table, &cfg, &kprops, 1, argv, err, sizeof(err)),
                     CONFIG_LOADED);
    config_props_free(&kprops);
    free(cfg.pg_conninfo);
    cfg.pg_conninfo = strdup(conninfo);
    free(cfg.topic_prefix);
    cfg.topic_prefix = strdup(prefix);
    const char *schemas = getenv("CQRS_SCHEMAS_DIR");
    free(cfg.schemas_dir);
    cfg.schemas_dir = strdup(schemas ? schemas : "schemas/domains");
    cfg.batch_max = 100;
    cfg.retry_max_ms = 1000;
    memset(&kprops, 0, sizeof(kprops));
    make_props(&kprops);
    base = event_base_new();
    prod = kafka_producer_new(base, &kprops, on_delivery, NULL, err, sizeof(err));
    ck_assert_msg(prod != NULL, "%s", err);
    delivered = delivery_errors = 0;
    proc = start_processor("proc-a");
}

static void teardown(void)
{
    processor_free(proc);
    kafka_producer_free(prod);
    event_base_free(base);
    PQfinish(db);
    config_free(processor_config_table, &cfg);
    config_props_free(&kprops);
}

static char *topic(const char *name)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s%s", prefix, name);
    return buf;
}

static bool delivered_reaches(void *arg)
{
    return delivered >= *(const int *)arg;
}

/* Runs the loop until delivered reaches want (at most 5 s); asserts it did. */
static void wait_delivered(int want)
{
    waitfor_loop(base, delivered_reaches, &want, 5000);
    ck_assert_int_eq(delivered, want);
}

/* Hands one command to the producer; id_out (may be NULL) receives its id. */
static void produce_cmd(const char *type, const char *agg, const char *payload, const char *key,
                        long long expected_version, int reply_partition, char *id_out)
{
    char id[IDS_UUID_LEN];
    ids_uuid(id);
    envelope e = {.id = id,
                  .source = "/test",
                  .type = (char *)type,
                  .subject = (char *)agg,
                  .tenant = "default",
                  .idempotency_key = (char *)key,
                  .expected_version = expected_version,
                  .reply_partition = reply_partition};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    ck_assert_int_eq(kafka_produce(prod, topic("commands"), -1, agg, strlen(agg), payload,
                                   strlen(payload), h, nh, NULL),
                     KAFKA_OK);
    if (id_out)
        memcpy(id_out, id, IDS_UUID_LEN);
}

/* Produces one command; id_out (may be NULL) receives its id. Waits for the delivery. */
static void send_cmd(const char *type, const char *agg, const char *payload, const char *key,
                     long long expected_version, int reply_partition, char *id_out)
{
    int before = delivered;
    produce_cmd(type, agg, payload, key, expected_version, reply_partition, id_out);
    wait_delivered(before + 1);
}

static void send_raw(const char *key, const char *value, const header *h, size_t nh)
{
    int before = delivered;
    ck_assert_int_eq(kafka_produce(prod, topic("commands"), -1, key, strlen(key), value,
                                   strlen(value), h, nh, NULL),
                     KAFKA_OK);
    wait_delivered(before + 1);
}

/* The value of the processor's metric name (no labels), as /metrics shows it. */
static long long metric(const char *name)
{
    char *text = metrics_render(processor_metrics(proc));
    char line[128];
    snprintf(line, sizeof(line), "\n%s ", name);
    const char *at = strstr(text, line);
    ck_assert_msg(at != NULL, "no metric %s", name);
    long long n = atoll(at + strlen(line));
    free(text);
    return n;
}

START_TEST(applies_versions_and_offsets)
{
    send_cmd("account.open", "acc-1", "{\"owner\":\"ada\"}", NULL, -1, -1, NULL);
    send_cmd("account.deposit", "acc-1", "{\"amount\":100}", NULL, -1, -1, NULL);
    send_cmd("account.withdraw", "acc-1", "{\"amount\":30}", NULL, -1, -1, NULL);
    ck_assert(wait_for(3, 20000, "SELECT version FROM aggregates WHERE id = 'acc-1'"));
    ck_assert_int_eq(q_int("SELECT (state->>'balance')::int FROM aggregates WHERE id = 'acc-1'"),
                     70);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'applied'"), 3);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox"), 3);
    ck_assert_int_eq(q_int("SELECT max(version) - min(version) FROM outbox"), 2);
    /* The stored position is one past the last command's offset on its partition. */
    ck_assert_int_eq(q_int("SELECT o.next_offset - c.kafka_offset FROM consumer_offsets o "
                           "JOIN commands c ON c.kafka_partition = o.partition "
                           "WHERE o.group_id LIKE '%%proc-a' ORDER BY c.kafka_offset DESC LIMIT 1"),
                     1);
    /* The relay publishes the events and marks them. */
    ck_assert(wait_for(0, 10000, "SELECT count(*) FROM outbox WHERE published_at IS NULL"));
    /* Each committed batch is timed in each of its turns. */
    long long batches = metric("processor_batches_total");
    ck_assert_int_ge(batches, 1);
    ck_assert_int_eq(metric("processor_reads_duration_seconds_count"), batches);
    ck_assert_int_eq(metric("processor_apply_duration_seconds_count"), batches);
    ck_assert_int_eq(metric("processor_writes_duration_seconds_count"), batches);
    ck_assert_int_eq(metric("processor_commit_duration_seconds_count"), batches);
}
END_TEST

static void exec_sql(const char *sql);

/*
 * An aggregate's new version is written on the page of the old one (a heap-only tuple, no new
 * primary key entry), as long as the page keeps room for it (migration 008, ADR 0032): with the
 * pages packed full, the updated rows would move to other pages.
 */
START_TEST(updated_aggregates_stay_on_their_page)
{
    enum { ACCOUNTS = 240, EVERY = 8 };
    char agg[32];
    for (int i = 0; i < ACCOUNTS; i++) {
        snprintf(agg, sizeof(agg), "page-%03d", i);
        send_cmd("account.open", agg, "{\"owner\":\"ada\"}", NULL, -1, -1, NULL);
    }
    ck_assert(wait_for(ACCOUNTS, 20000, "SELECT count(*) FROM aggregates"));
    exec_sql("CREATE TABLE pages_before AS "
             "SELECT id, (ctid::text::point)[0] AS page FROM aggregates");
    ck_assert_int_gt(q_int("SELECT count(DISTINCT page) FROM pages_before"), 2);
    for (int i = 0; i < ACCOUNTS; i += EVERY) {
        snprintf(agg, sizeof(agg), "page-%03d", i);
        send_cmd("account.deposit", agg, "{\"amount\":1}", NULL, -1, -1, NULL);
    }
    ck_assert(
        wait_for(ACCOUNTS / EVERY, 20000, "SELECT count(*) FROM aggregates WHERE version = 2"));
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates a JOIN pages_before b USING (id) "
                           "WHERE a.version = 2 AND (a.ctid::text::point)[0] <> b.page"),
                     0);
    exec_sql("DROP TABLE pages_before");
}
END_TEST

START_TEST(rejections_are_recorded_without_version_bump)
{
    send_cmd("account.open", "acc-2", "{\"owner\":\"bob\"}", NULL, -1, -1, NULL);
    char over[IDS_UUID_LEN], stale[IDS_UUID_LEN];
    send_cmd("account.withdraw", "acc-2", "{\"amount\":1}", NULL, -1, -1, over);
    send_cmd("account.deposit", "acc-2", "{\"amount\":1}", NULL, 7, -1, stale);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT http_status FROM commands WHERE id = '%s'", stale);
    ck_assert(wait_for(412, 20000, sql));
    ck_assert_int_eq(q_int("SELECT http_status FROM commands WHERE id = '%s'", over), 422);
    ck_assert_int_eq(q_int("SELECT version FROM aggregates WHERE id = 'acc-2'"), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox WHERE aggregate_id = 'acc-2'"), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'rejected'"), 2);
}
END_TEST

START_TEST(same_idempotency_key_applies_once)
{
    send_cmd("account.open", "acc-3", "{\"owner\":\"cy\"}", NULL, -1, -1, NULL);
    for (int i = 0; i < 3; i++)
        send_cmd("account.deposit", "acc-3", "{\"amount\":10}", "dep-key", -1, -1, NULL);
    send_cmd("account.deposit", "acc-3", "{\"amount\":1}", NULL, -1, -1, NULL);
    /* Version 3 is the last deposit's, which follows the keyed ones on the partition: they are
       all processed by now. */
    ck_assert(wait_for(3, 20000, "SELECT version FROM aggregates WHERE id = 'acc-3'"));
    ck_assert_int_eq(q_int("SELECT version FROM aggregates WHERE id = 'acc-3'"), 3);
    ck_assert_int_eq(q_int("SELECT (state->>'balance')::int FROM aggregates WHERE id = 'acc-3'"),
                     11);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE idempotency_key = 'dep-key'"), 1);
}
END_TEST

/*
 * Reads a topic from the beginning with a fresh group and counts, for each of the n values, the
 * messages whose header_name equals it. Stops once `expect` matches are seen (plus a short grace
 * to catch extras) or after 20 s.
 */
static void count_messages(const char *t, const char *header_name, const char *const *values,
                           int *counts, size_t n, int expect)
{
    static int readers;
    char err[512], group[200];
    snprintf(group, sizeof(group), "%sreader-%d", prefix, readers++);
    kafka_consumer *c =
        kafka_consumer_new(base, &kprops, group, t, NULL, NULL, NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    memset(counts, 0, n * sizeof(int));
    int total = 0, grace = -1;
    kafka_message msgs[64];
    for (int waited = 0; waited < 20000 && grace != 0; waited += 100) {
        size_t got = kafka_consumer_poll(c, msgs, 64);
        for (size_t i = 0; i < got; i++) {
            for (size_t k = 0; k < msgs[i].nheaders; k++) {
                const header *h = &msgs[i].headers[k];
                for (size_t v = 0; v < n && strcmp(h->name, header_name) == 0; v++) {
                    if (h->len == strlen(values[v]) && memcmp(h->value, values[v], h->len) == 0)
                        counts[v]++, total++;
                }
            }
        }
        if (grace > 0)
            grace--;
        else if (grace < 0 && total >= expect)
            grace = 5;
        run_for(100);
    }
    kafka_consumer_free(c);
}

START_TEST(poison_goes_to_dead_letters_and_partition_flows)
{
    /* Same key = same partition: the good command after the poison must still apply. */
    header bad[] = {{"ce_specversion", "0.1", 3}, {"ce_id", "x", 1}};
    send_raw("acc-4", "{}", bad, 2);
    char unknown[IDS_UUID_LEN];
    send_cmd("account.explode", "acc-4", "{}", NULL, -1, -1, unknown);
    send_cmd("account.deposit", "acc-4", "{\"amount\":\"ten\"}", NULL, -1, -1, NULL);
    send_cmd("account.open", "acc-4", "{\"owner\":\"di\"}", NULL, -1, -1, NULL);
    ck_assert(wait_for(1, 20000, "SELECT version FROM aggregates WHERE id = 'acc-4'"));
    ck_assert_int_eq(q_int("SELECT http_status FROM commands WHERE id = '%s'", unknown), 400);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'rejected'"), 2);
    const char *reasons[] = {"bad-envelope", "unknown-command", "invalid-payload"};
    int counts[3];
    count_messages(topic("commands.dlq"), "dlq_reason", reasons, counts, 3, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(counts[i] == 1, "%d dead letters for %s", counts[i], reasons[i]);
}
END_TEST

/* One dead letter as read back from the dead-letter topic. */
typedef struct dead_letter {
    char reason[64];
    char detail[512];
    char id[IDS_UUID_LEN];
} dead_letter;

static void copy_header(const header *h, char *out, size_t len)
{
    size_t n = h->len < len - 1 ? h->len : len - 1;
    memcpy(out, h->value, n);
    out[n] = '\0';
}

/* Reads the dead-letter topic from the beginning until want dead letters are seen (plus a short
   grace to catch extras) or 20 s pass; returns how many were read into out. */
static int read_dead_letters(dead_letter *out, int max, int want)
{
    static int readers;
    char err[512], group[200];
    snprintf(group, sizeof(group), "%sdlq-reader-%d", prefix, readers++);
    kafka_consumer *c = kafka_consumer_new(base, &kprops, group, topic("commands.dlq"), NULL, NULL,
                                           NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    int n = 0, grace = -1;
    kafka_message msgs[64];
    for (int waited = 0; waited < 20000 && grace != 0; waited += 100) {
        size_t got = kafka_consumer_poll(c, msgs, 64);
        for (size_t i = 0; i < got && n < max; i++, n++) {
            memset(&out[n], 0, sizeof(out[n]));
            for (size_t k = 0; k < msgs[i].nheaders; k++) {
                const header *h = &msgs[i].headers[k];
                if (strcmp(h->name, "dlq_reason") == 0)
                    copy_header(h, out[n].reason, sizeof(out[n].reason));
                else if (strcmp(h->name, "dlq_detail") == 0)
                    copy_header(h, out[n].detail, sizeof(out[n].detail));
                else if (strcmp(h->name, "ce_id") == 0)
                    copy_header(h, out[n].id, sizeof(out[n].id));
            }
        }
        if (grace > 0)
            grace--;
        else if (grace < 0 && n >= want)
            grace = 5;
        run_for(100);
    }
    kafka_consumer_free(c);
    return n;
}

/* The dead letter of command id, or NULL. */
static const dead_letter *dead_letter_of(const dead_letter *d, int n, const char *id)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(d[i].id, id) == 0)
            return &d[i];
    }
    return NULL;
}

/* Printable bytes that do not repeat, so PostgreSQL cannot compress them under its index limit. */
static void fill_incompressible(char *buf, size_t len)
{
    unsigned x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (char)('!' + (x >> 16) % 94);
    }
    buf[len] = '\0';
}

/*
 * Commands another producer wrote (kcat, a client library) with identities PostgreSQL cannot
 * store or index: each must end dead-lettered with a reason naming what is wrong, the partition
 * must keep flowing, and a good command after them on the same partition must be applied.
 * Before: a non-UTF-8 ce_subject or ce_tenant wrote nothing and sent no dead letter; a non-UTF-8
 * key was applied without its idempotency record; a 3000-byte key stopped the partition.
 */
START_TEST(hostile_identities_are_dead_lettered_and_the_partition_flows)
{
    static char long_key[3001], long_subject[3001];
    fill_incompressible(long_key, 3000);
    fill_incompressible(long_subject, 3000);
    static const struct {
        const char *name, *subject, *tenant, *key, *detail;
    } cases[] = {
        {"subject not UTF-8", "acc-h\xff", "default", NULL, "ce_subject"},
        {"tenant not UTF-8", "acc-h", "t\xff", NULL, "ce_tenant"},
        {"key not UTF-8", "acc-h", "default", "k\xfe", "ce_idempotencykey"},
        {"key of 3000 bytes", "acc-h", "default", long_key, "ce_idempotencykey"},
        {"subject of 3000 bytes", long_subject, "default", NULL, "ce_subject"},
    };
    enum { NCASES = sizeof(cases) / sizeof(cases[0]) };
    char ids[NCASES + 1][IDS_UUID_LEN];
    for (int i = 0; i < NCASES; i++) {
        ids_uuid(ids[i]);
        envelope e = {.id = ids[i],
                      .source = "/kcat",
                      .type = "account.open",
                      .subject = (char *)cases[i].subject,
                      .tenant = (char *)cases[i].tenant,
                      .idempotency_key = (char *)cases[i].key,
                      .expected_version = -1,
                      .reply_partition = -1};
        header h[ENVELOPE_MAX_HEADERS];
        char scratch[64];
        size_t nh = envelope_to_headers(&e, h, scratch);
        send_raw("acc-h", "{\"owner\":\"eve\"}", h, nh); /* one partition for all */
    }
    /* A structured-mode CloudEvent: the whole event in the value, no ce_* headers. */
    ids_uuid(ids[NCASES]);
    char structured[512];
    snprintf(structured, sizeof(structured),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/lib\",\"type\":"
             "\"account.open\",\"subject\":\"acc-h\",\"data\":{\"owner\":\"eve\"}}",
             ids[NCASES]);
    header sh[] = {{"content-type", "application/cloudevents+json", 28}};
    send_raw("acc-h", structured, sh, 1);
    /* The good command after them, on the same partition. */
    send_cmd("account.open", "acc-h", "{\"owner\":\"ada\"}", NULL, -1, -1, NULL);
    /* It follows the bad ones on the partition: they are all processed by now. */
    ck_assert(wait_for(1, 20000, "SELECT version FROM aggregates WHERE id = 'acc-h'"));
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates"), 1);
    ck_assert_int_eq(q_int("SELECT (state->>'owner' = 'ada')::int FROM aggregates"), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands"), 1);

    dead_letter d[16];
    int n = read_dead_letters(d, 16, NCASES + 1);
    ck_assert_msg(n == NCASES + 1, "%d dead letters, want %d", n, NCASES + 1);
    for (int i = 0; i < NCASES; i++) {
        const dead_letter *dl = dead_letter_of(d, n, ids[i]);
        ck_assert_msg(dl != NULL, "%s: no dead letter", cases[i].name);
        ck_assert_str_eq(dl->reason, "bad-envelope");
        ck_assert_msg(strstr(dl->detail, cases[i].detail), "%s: detail '%s'", cases[i].name,
                      dl->detail);
    }
    bool structured_seen = false;
    for (int i = 0; i < n; i++)
        structured_seen |= strstr(d[i].detail, "structured-mode CloudEvent") != NULL;
    ck_assert_msg(structured_seen, "no dead letter says the CloudEvent was in structured mode");
}
END_TEST

/*
 * PostgreSQL refuses one command's writes for a reason retrying cannot cure (here a trigger
 * raising SQLSTATE 22023 for one aggregate, standing for a value out of range or an index row
 * too large). The batch is split to isolate it, it is dead-lettered with PostgreSQL's message and
 * recorded as rejected, and the commands around it, and after it, are applied. Before: the batch
 * was retried forever and the partition stopped.
 */
START_TEST(a_command_postgresql_refuses_is_isolated_and_dead_lettered)
{
    exec_sql("CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "IF NEW.id = 'acc-poison' THEN RAISE EXCEPTION 'value out of range for the test' "
             "USING ERRCODE = '22023'; END IF; RETURN NEW; END $$");
    exec_sql("CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON aggregates "
             "FOR EACH ROW EXECUTE FUNCTION refuse_poison()");
    /* Stopped while they are produced, so that they make one batch. */
    processor_free(proc);
    proc = NULL;
    char poison[IDS_UUID_LEN];
    send_cmd("account.open", "acc-p1", "{\"owner\":\"a\"}", NULL, -1, -1, NULL);
    send_cmd("account.open", "acc-p2", "{\"owner\":\"b\"}", NULL, -1, -1, NULL);
    send_cmd("account.open", "acc-poison", "{\"owner\":\"c\"}", NULL, -1, -1, poison);
    send_cmd("account.open", "acc-p3", "{\"owner\":\"d\"}", NULL, -1, -1, NULL);
    send_cmd("account.open", "acc-p4", "{\"owner\":\"e\"}", NULL, -1, -1, NULL);
    proc = start_processor("proc-isolate");
    ck_assert(wait_for(4, 20000, "SELECT count(*) FROM aggregates"));
    /* A later command on the poison's partition (its aggregate) is decided too. */
    char later[IDS_UUID_LEN];
    send_cmd("account.deposit", "acc-poison", "{\"amount\":1}", NULL, -1, -1, later);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM commands WHERE id = '%s'", later);
    ck_assert(wait_for(1, 20000, sql));
    /* The account was never opened: the deposit is rejected by the domain, not by PostgreSQL. */
    ck_assert_int_eq(
        q_int("SELECT (status = 'rejected')::int FROM commands WHERE id = '%s'", later), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates WHERE id = 'acc-poison'"), 0);
    ck_assert_int_eq(q_int("SELECT http_status FROM commands WHERE id = '%s' AND "
                           "status = 'rejected' AND result->>'detail' LIKE '%%22023%%'",
                           poison),
                     400);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'applied'"), 4);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox"), 4);
    ck_assert(metrics_value(metrics_counter_get(
                  processor_metrics(proc), "processor_batches_isolated_total", "", NULL)) >= 1);
    dead_letter d[8];
    int n = read_dead_letters(d, 8, 1);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(d[0].id, poison);
    ck_assert_str_eq(d[0].reason, "rejected-by-postgresql");
    ck_assert_msg(strstr(d[0].detail, "value out of range for the test"), "detail '%s'",
                  d[0].detail);
}
END_TEST

/*
 * An outbox row the relay cannot turn into an event (here version 0) is said at error level and
 * counted, and stays unpublished for an operator; before, it was dropped without a word.
 */
START_TEST(a_malformed_outbox_row_is_reported_and_kept)
{
    exec_sql("INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, "
             "command_id, payload, created_at) VALUES ('default', 'account', 'acc-m', 0, "
             "'account.opened', gen_random_uuid(), '{}', now() - interval '1 minute')");
    processor_free(proc);
    proc = start_processor("proc-relay");
    metrics_counter *malformed =
        metrics_counter_get(processor_metrics(proc), "relay_outbox_rows_malformed_total", "", NULL);
    for (int i = 0; i < 200 && metrics_value(malformed) == 0; i++)
        run_for(50);
    ck_assert_uint_eq(metrics_value(malformed), 1);
    ck_assert_int_eq(
        q_int("SELECT count(*) FROM outbox WHERE aggregate_id = 'acc-m' AND published_at IS NULL"),
        1);
}
END_TEST

/* A gauge of the processor's metrics (0 when not registered yet). */
static long long gauge(const char *name)
{
    return metrics_gauge_value(metrics_gauge_get(processor_metrics(proc), name, "", NULL));
}

typedef struct {
    const char *name;
    long long want;
} gauge_watch;

static bool gauge_reads(void *arg)
{
    const gauge_watch *w = arg;
    return gauge(w->name) == w->want;
}

/* Runs the loop until the gauge reads want, for at most timeout_ms. */
static bool wait_gauge(const char *name, long long want, int timeout_ms)
{
    gauge_watch w = {name, want};
    return waitfor_loop(base, gauge_reads, &w, timeout_ms);
}

/* Ends the processor's batch session (the one named "state-processor"): it connects again. */
static void end_the_batch_session(void)
{
    ck_assert(wait_for(1, 15000,
                       "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name = 'state-processor'"));
    ck_assert_int_eq(q_int("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                           "datname = current_database() AND application_name = 'state-processor'"),
                     1);
}

/* Rows of a little over 1 kB for a table of the processor's, named f-<from>..f-<to>. */
static void fill(const char *table, int from, int to)
{
    char sql[1024];
    if (strcmp(table, "aggregates") == 0)
        snprintf(sql, sizeof(sql),
                 "INSERT INTO aggregates (tenant, type, id, version, state) SELECT 'default', "
                 "'filler', 'f-' || g, 1, jsonb_build_object('pad', repeat('x', 1000)) "
                 "FROM generate_series(%d, %d) g",
                 from, to);
    else if (strcmp(table, "commands") == 0)
        snprintf(sql, sizeof(sql),
                 "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, "
                 "aggregate_id, status, result) SELECT gen_random_uuid(), 'default', 'f-' || g, "
                 "'filler', 'filler', 'f-' || g, 'applied', jsonb_build_object('pad', "
                 "repeat('x', 1000)) FROM generate_series(%d, %d) g",
                 from, to);
    else
        snprintf(sql, sizeof(sql),
                 "INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, "
                 "command_id, payload, published_at) SELECT 'default', 'filler', 'f-' || g, 1, "
                 "'filler', gen_random_uuid(), jsonb_build_object('pad', repeat('x', 1000)), "
                 "now() FROM generate_series(%d, %d) g",
                 from, to);
    exec_sql(sql);
}

/*
 * The processor's batch session plans each execution while its tables have no statistics (ADR
 * 0028), keeps generic plans once they have (ADR 0037), plans each execution again while a small
 * table has outgrown its statistics, and keeps generic plans again once they are taken anew; a
 * table analyzed large keeps them however it grows. Each new session asks; autovacuum is kept off
 * the tables so that only the test analyzes them.
 */
START_TEST(statements_keep_generic_plans_while_the_statistics_are_current)
{
    const char *tables[] = {"aggregates", "commands", "outbox"};
    for (size_t i = 0; i < 3; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "ALTER TABLE %s SET (autovacuum_enabled = false)", tables[i]);
        exec_sql(sql);
        fill(tables[i], 1, 1000);
    }
    exec_sql("ANALYZE aggregates, commands, outbox");
    end_the_batch_session();
    ck_assert(wait_gauge("processor_generic_plans", 1, 15000));

    /* still applying commands, on generic plans */
    send_cmd("account.open", "acc-plans", "{\"owner\":\"ada\"}", NULL, -1, -1, NULL);
    send_cmd("account.deposit", "acc-plans", "{\"amount\":5}", NULL, -1, -1, NULL);
    ck_assert(wait_for(2, 20000, "SELECT version FROM aggregates WHERE id = 'acc-plans'"));

    /* aggregates grows to four times its size when analyzed */
    fill("aggregates", 1001, 4000);
    end_the_batch_session();
    ck_assert(wait_gauge("processor_generic_plans", 0, 15000));

    /* analyzed again, large now (8,000 rows, over 1,024 pages) */
    fill("aggregates", 4001, 8000);
    exec_sql("ANALYZE aggregates");
    end_the_batch_session();
    ck_assert(wait_gauge("processor_generic_plans", 1, 15000));

    /* A large table outgrowing its statistics keeps generic plans: here aggregates, three times
       its size, still does while commands outgrows its own and then has them taken anew. */
    fill("aggregates", 8001, 24000);
    fill("commands", 1001, 4000);
    end_the_batch_session();
    ck_assert(wait_gauge("processor_generic_plans", 0, 15000));
    exec_sql("ANALYZE commands");
    end_the_batch_session();
    ck_assert(wait_gauge("processor_generic_plans", 1, 15000));
}
END_TEST

/* The scans of aggregates PostgreSQL has counted, of the kind column (seq_scan, idx_scan). */
static long long aggregate_scans(const char *column)
{
    return q_int("SELECT %s FROM pg_stat_user_tables WHERE relname = 'aggregates'", column);
}

/*
 * A small batch finds its aggregates by key (ADR 0038) where the planner, which takes a jsonb
 * parameter for 100 rows, would read a small table whole into a hash join: here 1,000 small
 * aggregates. The batch session's scans are counted once it ends (its counters are flushed then).
 */
START_TEST(a_small_batch_looks_its_aggregates_up_by_key)
{
    exec_sql("INSERT INTO aggregates (tenant, type, id, version, state) SELECT 'default', "
             "'filler', 'f-' || g, 1, '{}' FROM generate_series(1, 1000) g");
    exec_sql("ANALYZE aggregates");
    q_int("SELECT 1 FROM pg_stat_force_next_flush()"); /* this session's own scans counted first */
    long long seq = aggregate_scans("seq_scan"), upd = aggregate_scans("n_tup_upd");

    /* One batch each, the account opened first: three batches that update its row. */
    for (int i = 0; i < 4; i++) {
        if (i == 0)
            send_cmd("account.open", "acc-keyed", "{\"owner\":\"ada\"}", NULL, -1, -1, NULL);
        else
            send_cmd("account.deposit", "acc-keyed", "{\"amount\":5}", NULL, -1, -1, NULL);
        /* by key, as the test must not scan the table itself */
        ck_assert(wait_for(i + 1, 20000,
                           "SELECT version FROM aggregates WHERE tenant = 'default' AND "
                           "type = 'account' AND id = 'acc-keyed'"));
    }
    end_the_batch_session();
    /* Its counters are in once its three updates are: each batch read before it wrote. */
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT (n_tup_upd >= %lld)::int FROM pg_stat_user_tables WHERE relname = "
             "'aggregates'",
             upd + 3);
    ck_assert(wait_for(1, 15000, sql));
    ck_assert_int_eq(aggregate_scans("seq_scan"), seq);
}
END_TEST

/*
 * Published outbox rows older than outbox.retention_s are deleted; recent ones and unpublished
 * ones are kept. Before, the outbox only grew.
 */
START_TEST(published_outbox_rows_past_retention_are_purged)
{
    exec_sql("INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, "
             "command_id, payload, created_at, published_at) SELECT 'default', 'account', "
             "'acc-old', v, 'account.deposited', gen_random_uuid(), '{}', "
             "now() - interval '3 days', now() - interval '3 days' FROM generate_series(1, 30) v");
    exec_sql("INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, "
             "command_id, payload, created_at, published_at) VALUES ('default', 'account', "
             "'acc-new', 1, 'account.opened', gen_random_uuid(), '{}', now(), now())");
    /* Never published (the relay cannot: version 0), however old: an event still owed. */
    exec_sql("INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, "
             "command_id, payload, created_at) VALUES ('default', 'account', 'acc-owed', 0, "
             "'account.opened', gen_random_uuid(), '{}', now() - interval '30 days')");
    processor_free(proc);
    cfg.outbox_retention_s = 86400;
    proc = start_processor("proc-outbox");
    ck_assert(wait_for(0, 10000, "SELECT count(*) FROM outbox WHERE aggregate_id = 'acc-old'"));
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox WHERE aggregate_id = 'acc-new'"), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox WHERE aggregate_id = 'acc-owed' AND "
                           "published_at IS NULL"),
                     1);
}
END_TEST

/*
 * A claim left accepted past idempotency.abandon_after_s is marked abandoned (and measured until
 * then by processor_oldest_accepted_seconds); its command, arriving late, is still applied, once.
 * A younger claim is left alone. Before, such claims stayed accepted forever, unmeasured.
 */
START_TEST(old_claims_are_abandoned_measured_and_still_applied)
{
    char old_id[IDS_UUID_LEN];
    ids_uuid(old_id);
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, "
             "aggregate_id, status, created_at) VALUES ('%s', 'default', 'orphan-1', "
             "'account.open', 'account', 'acc-orphan', 'accepted', now() - interval '2 hours'), "
             "(gen_random_uuid(), 'default', 'young-1', 'account.open', 'account', 'acc-young', "
             "'accepted', now() - interval '5 minutes')",
             old_id);
    exec_sql(sql);
    processor_free(proc);
    cfg.abandon_after_s = 3600;
    proc = start_processor("proc-reaper");
    snprintf(sql, sizeof(sql), "SELECT (status = 'abandoned')::int FROM commands WHERE id = '%s'",
             old_id);
    ck_assert(wait_for(1, 10000, sql));
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'abandoned' AND "
                           "finished_at IS NOT NULL"),
                     1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE idempotency_key = 'young-1' AND "
                           "status = 'accepted'"),
                     1);
    /* The gauges follow the statement that marks them, in the same run. */
    for (int i = 0; i < 100 && gauge("processor_abandoned_commands") != 1; i++)
        run_for(50);
    ck_assert_int_eq(gauge("processor_abandoned_commands"), 1);
    ck_assert_int_eq(gauge("processor_accepted_commands"), 1);
    long long oldest = gauge("processor_oldest_accepted_seconds");
    ck_assert_msg(oldest >= 300 && oldest < 400, "oldest accepted: %lld s", oldest);

    /* The abandoned command arrives after all: applied, once. */
    envelope e = {.id = old_id,
                  .source = "/test",
                  .type = "account.open",
                  .subject = "acc-orphan",
                  .tenant = "default",
                  .idempotency_key = "orphan-1",
                  .expected_version = -1,
                  .reply_partition = -1};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    send_raw("acc-orphan", "{\"owner\":\"late\"}", h, nh);
    send_raw("acc-orphan", "{\"owner\":\"late\"}", h, nh); /* a producer's retry */
    snprintf(sql, sizeof(sql), "SELECT (status = 'applied')::int FROM commands WHERE id = '%s'",
             old_id);
    ck_assert(wait_for(1, 20000, sql));
    run_for(300);
    ck_assert_int_eq(q_int("SELECT version FROM aggregates WHERE id = 'acc-orphan'"), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox WHERE aggregate_id = 'acc-orphan'"), 1);
}
END_TEST

START_TEST(events_have_stable_ids_and_replay_changes_nothing)
{
    send_cmd("account.open", "acc-5", "{\"owner\":\"ed\"}", NULL, -1, -1, NULL);
    send_cmd("account.deposit", "acc-5", "{\"amount\":5}", NULL, -1, -1, NULL);
    ck_assert(wait_for(2, 20000, "SELECT version FROM aggregates WHERE id = 'acc-5'"));
    const char *ids[] = {"default/account/acc-5/1", "default/account/acc-5/2"};
    int counts[2];
    count_messages(topic("events"), "ce_id", ids, counts, 2, 2);
    ck_assert_int_eq(counts[0], 1);
    ck_assert_int_eq(counts[1], 1);

    /* A second group reads the whole topic again: the idempotency records stop every command. */
    processor_free(proc);
    proc = start_processor("proc-replay");
    ck_assert(wait_for(1, 20000,
                       "SELECT count(*) FROM consumer_offsets WHERE group_id LIKE '%proc-replay'"));
    run_for(500);
    ck_assert_int_eq(q_int("SELECT version FROM aggregates WHERE id = 'acc-5'"), 2);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox"), 2);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands"), 2);
}
END_TEST

/*
 * PostgreSQL, not Kafka, says where a partition resumes. The group's offsets committed to Kafka
 * are at the end of the partition, but the database is put back to before the commands (as a
 * restore from a backup would): the processor must apply them again from the beginning.
 */
START_TEST(partitions_start_at_the_offsets_stored_in_postgresql)
{
    send_cmd("account.open", "acc-6", "{\"owner\":\"fay\"}", NULL, -1, -1, NULL);
    send_cmd("account.deposit", "acc-6", "{\"amount\":5}", NULL, -1, -1, NULL);
    ck_assert(wait_for(2, 20000, "SELECT version FROM aggregates WHERE id = 'acc-6'"));
    run_for(300); /* the informational commit to Kafka follows each batch */
    processor_free(proc);
    proc = NULL;
    PQclear(PQexec(db, "TRUNCATE aggregates, commands, outbox, consumer_offsets"));
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates"), 0);

    proc = start_processor("proc-a");
    ck_assert(wait_for(2, 20000, "SELECT version FROM aggregates WHERE id = 'acc-6'"));
    ck_assert_int_eq(q_int("SELECT (state->>'balance')::int FROM aggregates WHERE id = 'acc-6'"),
                     5);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'applied'"), 2);
}
END_TEST

START_TEST(reply_goes_to_the_named_partition)
{
    char err[512];
    kafka_consumer *c = kafka_consumer_new(base, &kprops, "reply-reader", topic("replies"), NULL,
                                           NULL, NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    char id[IDS_UUID_LEN];
    send_cmd("account.open", "acc-6", "{\"owner\":\"fi\"}", NULL, -1, 2, id);
    bool seen = false;
    kafka_message msgs[16];
    for (int waited = 0; waited < 20000 && !seen; waited += 100) {
        size_t got = kafka_consumer_poll(c, msgs, 16);
        for (size_t i = 0; i < got; i++) {
            json_t *j = json_loadb(msgs[i].value, msgs[i].len, 0, NULL);
            if (strcmp(json_string_value(json_object_get(j, "command_id")), id) == 0) {
                ck_assert_int_eq(msgs[i].partition, 2);
                ck_assert_int_eq(json_integer_value(json_object_get(j, "http_status")), 201);
                ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "applied");
                seen = true;
            }
            json_decref(j);
        }
        run_for(100);
    }
    kafka_consumer_free(c);
    ck_assert(seen);
}
END_TEST

static void exec_sql(const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
}

START_TEST(expired_idempotency_records_are_purged)
{
    exec_sql("INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, "
             "aggregate_id, status, http_status, created_at, finished_at) VALUES "
             "(gen_random_uuid(), 'default', 'old-done', 'account.open', 'account', 'acc-7', "
             "'applied', 201, now() - interval '3 days', now() - interval '2 days'), "
             "(gen_random_uuid(), 'default', 'new-done', 'account.open', 'account', 'acc-8', "
             "'applied', 201, now(), now()), "
             "(gen_random_uuid(), 'default', 'old-open', 'account.open', 'account', 'acc-9', "
             "'accepted', NULL, now() - interval '3 days', NULL)");
    /* The purge runs when a processor starts, then every idempotency.purge_interval_s. */
    processor_free(proc);
    proc = start_processor("proc-b");
    ck_assert(
        wait_for(0, 10000, "SELECT count(*) FROM commands WHERE idempotency_key = 'old-done'"));
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE idempotency_key IN "
                           "('new-done', 'old-open')"),
                     2);
    /* The expired key starts a new request. */
    send_cmd("account.open", "acc-7", "{\"owner\":\"gu\"}", "old-done", -1, -1, NULL);
    ck_assert(wait_for(1, 20000, "SELECT version FROM aggregates WHERE id = 'acc-7'"));
}
END_TEST

/*
 * A write the database refuses (here a trigger on the batch's first write, the aggregates) rolls
 * the whole batch back: nothing of it is stored, not even its offsets, and the same batch is
 * retried after a backoff until the database takes it, then applied once.
 */
START_TEST(a_refused_write_rolls_back_the_batch_and_is_retried)
{
    send_cmd("account.open", "acc-10", "{\"owner\":\"ha\"}", NULL, -1, -1, NULL);
    send_cmd("account.open", "acc-11", "{\"owner\":\"io\"}", NULL, -1, -1, NULL);
    ck_assert(
        wait_for(2, 20000, "SELECT count(*) FROM aggregates WHERE id IN ('acc-10', 'acc-11')"));
    long long offsets = q_int("SELECT sum(next_offset) FROM consumer_offsets");
    /* A sequence counts the refusals: nextval() is not undone by the rollback. */
    exec_sql("CREATE SEQUENCE refusals");
    exec_sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "IF (NEW.state->>'balance')::numeric >= 1000 THEN PERFORM nextval('refusals'); "
             "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$");
    exec_sql("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON aggregates "
             "FOR EACH ROW EXECUTE FUNCTION refuse()");
    send_cmd("account.deposit", "acc-10", "{\"amount\":5000}", NULL, -1, -1, NULL);
    ck_assert(wait_for(1, 20000, "SELECT sign(last_value - 1) FROM refusals")); /* 2 or more */
    /* The processor does not skip the batch it cannot store: what comes after it waits. */
    send_cmd("account.deposit", "acc-11", "{\"amount\":1}", NULL, -1, -1, NULL);
    run_for(1500);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE type = 'account.deposit'"), 0);
    ck_assert_int_eq(q_int("SELECT max(version) FROM aggregates"), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox"), 2);
    ck_assert_int_eq(q_int("SELECT sum(next_offset) FROM consumer_offsets"), offsets);
    exec_sql("DROP TRIGGER refuse ON aggregates");
    ck_assert(wait_for(2, 20000, "SELECT count(*) FROM commands WHERE type = 'account.deposit'"));
    ck_assert_int_eq(q_int("SELECT (state->>'balance')::int FROM aggregates WHERE id = 'acc-10'"),
                     5000);
    ck_assert_int_eq(q_int("SELECT sum(version) FROM aggregates"), 4);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox"), 4);
    ck_assert_int_eq(q_int("SELECT sum(next_offset) FROM consumer_offsets"), offsets + 2);
}
END_TEST

/* ---- an idle group member keeps its partitions ---- */

typedef struct member {
    kafka_consumer *c;
    int assigned, revoked; /* rebalance callbacks */
} member;

/*
 * Stores next_offset for every partition of the commands topic for group (made unique as
 * start_processor() does), under cluster (NULL: none named), as an earlier run would have.
 */
static void store_offsets(const char *group, long long next_offset, const char *cluster)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, cluster_id) "
             "SELECT '%s%s', '%s', p, %lld, %s%s%s FROM generate_series(0, 63) AS p",
             prefix, group, topic("commands"), next_offset, cluster ? "'" : "",
             cluster ? cluster : "NULL", cluster ? "'" : "");
    exec_sql(sql);
}

/* Four accounts opened, spread over the partitions by their keys. */
static void open_four(const char *tag)
{
    for (int i = 0; i < 4; i++) {
        char agg[32];
        snprintf(agg, sizeof(agg), "%s-%d", tag, i);
        send_cmd("account.open", agg, "{\"owner\":\"x\"}", NULL, -1, -1, NULL);
    }
}

/* A cluster replaced under the same database (make run restarted with its PostgreSQL kept, a
   restored cluster): its offsets count a log that no longer exists. */
START_TEST(offsets_of_another_cluster_are_not_trusted)
{
    processor_free(proc);
    proc = NULL;
    store_offsets("proc-b", 3, "a-cluster-that-is-gone");
    open_four("oc");
    proc = start_processor("proc-b");
    ck_assert_msg(wait_for(4, 30000, "SELECT count(*) FROM aggregates WHERE id LIKE 'oc-%'"),
                  "commands of the new log were skipped as if processed");
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'applied'"), 4);
    /* The offsets now name this cluster and count this log. */
    ck_assert(wait_for(0, 5000,
                       "SELECT count(*) FROM consumer_offsets WHERE group_id LIKE '%proc-b' "
                       "AND cluster_id = 'a-cluster-that-is-gone' AND next_offset > 0 "
                       "AND partition IN (SELECT kafka_partition FROM commands)"));
    ck_assert_int_eq(q_int("SELECT count(*) FROM consumer_offsets o JOIN (SELECT kafka_partition, "
                           "max(kafka_offset) + 1 AS n FROM commands GROUP BY 1) c ON "
                           "c.kafka_partition = o.partition WHERE o.group_id LIKE '%%proc-b' AND "
                           "o.next_offset = c.n AND o.cluster_id IS NOT NULL"),
                     q_int("SELECT count(DISTINCT kafka_partition) FROM commands"));
}
END_TEST

/* A topic deleted and created again, or a partition truncated: the stored offset lies beyond the
   partition's end, and Kafka starts the partition elsewhere. The offsets here name no cluster
   (as stored before offsets named one), so only the first message read can tell. */
START_TEST(an_offset_beyond_the_partition_end_is_not_trusted)
{
    processor_free(proc);
    proc = NULL;
    store_offsets("proc-b", 1000, NULL);
    open_four("or");
    proc = start_processor("proc-b");
    ck_assert_msg(wait_for(4, 30000, "SELECT count(*) FROM aggregates WHERE id LIKE 'or-%'"),
                  "commands of the new log were skipped as if processed");
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'applied'"), 4);
    ck_assert_int_eq(q_int("SELECT count(*) FROM consumer_offsets WHERE group_id LIKE '%%proc-b' "
                           "AND next_offset >= 1000 AND partition IN "
                           "(SELECT kafka_partition FROM commands)"),
                     0);
}
END_TEST

/* offsets.on_mismatch=fail: nothing is read, the processor stops and says why. */
START_TEST(a_foreign_offset_stops_the_processor_under_policy_fail)
{
    processor_free(proc);
    proc = NULL;
    store_offsets("proc-b", 3, "a-cluster-that-is-gone");
    open_four("of");
    free(cfg.offsets_on_mismatch);
    cfg.offsets_on_mismatch = strdup("fail");
    proc = start_processor("proc-b");
    /* The loop ends on its own when the processor stops. */
    struct timeval limit = {30, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    ck_assert_msg(txloop_failed(processor_loop(proc)), "the processor did not stop within 30 s");
    ck_assert_int_eq(q_int("SELECT count(*) FROM aggregates"), 0);
    ck_assert_int_eq(q_int("SELECT count(*) FROM consumer_offsets WHERE group_id LIKE '%%proc-b' "
                           "AND cluster_id = 'a-cluster-that-is-gone'"),
                     64);
    /* A bad policy is a start-up error naming its key. */
    free(cfg.offsets_on_mismatch);
    cfg.offsets_on_mismatch = strdup("skip");
    char err[512];
    processor *bad = processor_new(base, &cfg, &kprops, err, sizeof(err));
    ck_assert_ptr_null(bad);
    ck_assert_msg(strstr(err, "offsets.on_mismatch") != NULL, "%s", err);
}
END_TEST

/* `state-processor lag` counts a stored offset of another log as nothing read of this one. */
START_TEST(lag_counts_an_offset_of_another_log_from_the_beginning)
{
    lagcmd_row same = {.partition = 0, .stored = 7, .low = 2, .high = 10};
    ck_assert_int_eq(lagcmd_lag(&same), 3);
    lagcmd_row other = same;
    other.other_log = true; /* stored under another cluster */
    ck_assert_int_eq(lagcmd_lag(&other), 8);
    lagcmd_row beyond = {.partition = 0, .stored = 50, .low = 0, .high = 10};
    ck_assert_int_eq(lagcmd_lag(&beyond), 10);
    lagcmd_row none = {.partition = 0, .stored = -1, .low = 4, .high = 10};
    ck_assert_int_eq(lagcmd_lag(&none), 6);
}
END_TEST

static void member_wake(void *arg)
{
    member *m = arg;
    kafka_message msgs[16];
    while (kafka_consumer_poll(m->c, msgs, 16) > 0)
        ;
}

static bool member_assign(const int *partitions, size_t n, bool assigned, void *arg)
{
    (void)partitions, (void)n;
    member *m = arg;
    assigned ? m->assigned++ : m->revoked++;
    return false;
}

/*
 * A member that polls only when woken, on a topic where nothing arrives, for longer than
 * max.poll.interval.ms: the consumer's own wake-ups keep it polling, so it is never taken for
 * stuck, dropped from the group and rejoined (one assignment, no revocation).
 */
START_TEST(idle_member_keeps_its_partitions)
{
    config_props props = {0};
    make_props(&props);
    config_props_set(&props, "session.timeout.ms", "6000");
    config_props_set(&props, "max.poll.interval.ms", "6000");
    char group[96], err[512];
    snprintf(group, sizeof(group), "%sidle", prefix);
    member m = {0};
    m.c = kafka_consumer_new(base, &props, group, topic("commands"), member_wake, member_assign, &m,
                             err, sizeof(err));
    config_props_free(&props);
    ck_assert_msg(m.c != NULL, "%s", err);
    for (int i = 0; i < 400 && m.assigned == 0; i++)
        run_for(50);
    ck_assert_int_eq(m.assigned, 1);
    run_for(10000);
    ck_assert_int_eq(m.revoked, 0);
    ck_assert_int_eq(m.assigned, 1);
    kafka_consumer_free(m.c);
}
END_TEST

typedef struct answered {
    int calls;
    pgconn_status status;
    long long value; /* the first column of the first row, or -1 */
} answered;

static void on_answered(const pgconn_result *r, void *arg)
{
    answered *a = arg;
    a->calls++;
    a->status = pgconn_result_status(r);
    a->value = a->status == PGCONN_OK && pgconn_result_ntuples(r) > 0
                   ? atoll(pgconn_result_value(r, 0, 0))
                   : -1;
}

/* Runs the loop until *calls is 1 (a query answered), at most 10 s. */
static bool answered_within(const answered *a)
{
    for (int waited = 0; waited < 10000 && a->calls == 0; waited += 10)
        run_for(10);
    return a->calls == 1;
}

START_TEST(a_transaction_never_goes_on_in_a_new_session)
{
    char err[256];
    exec_sql("CREATE TABLE tx_session_probe (x int)");
    pgconn *pg = pgconn_new(base, conninfo, NULL, NULL, err, sizeof(err));
    ck_assert_msg(pg != NULL, "%s", err);
    for (int waited = 0; waited < 10000 && !pgconn_connected(pg); waited += 10)
        run_for(10);
    ck_assert(pgconn_connected(pg));
    txphase ph;
    txphase_begin(&ph, pg);
    answered begin = {0};
    ck_assert_int_eq(txphase_query(&ph, pg, "BEGIN", 0, NULL, on_answered, &begin), 0);
    ck_assert(answered_within(&begin));
    ck_assert_int_eq(begin.status, PGCONN_OK);
    /* The session ends under the transaction, as when PostgreSQL restarts or fails over. */
    exec_sql("DO $$ BEGIN PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
             "datname = current_database() AND pid <> pg_backend_pid(); END $$");
    for (int waited = 0; waited < 10000 && !(pgconn_connected(pg) && pgconn_connects(pg) == 2);
         waited += 10)
        run_for(10);
    ck_assert_int_eq(pgconn_connects(pg), 2);
    /* The transaction's next statement: refused, not run alone on the new session (where it
       would commit at once, its BEGIN gone with the old one). */
    answered insert = {0};
    int rc = txphase_query(&ph, pg, "INSERT INTO tx_session_probe VALUES (1)", 0, NULL, on_answered,
                           &insert);
    answered count = {0};
    ck_assert_int_eq(
        pgconn_query(pg, "SELECT count(*) FROM tx_session_probe", 0, NULL, on_answered, &count), 0);
    ck_assert(answered_within(&count)); /* after the INSERT, had it been queued */
    pgconn_free(pg);
    ck_assert_int_eq(rc, -1);
    ck_assert(ph.failed);
    ck_assert_str_eq(ph.error, "connection lost");
    ck_assert_int_eq(insert.calls, 0);
    ck_assert_int_eq(count.value, 0);
}
END_TEST

/* ---- the next batch, taken ahead while the writes run ---- */

/* Messages the processor has polled: its transit histogram counts each one. */
static long long polled(void)
{
    return metric("processor_command_transit_seconds_count");
}

enum { AHEAD_BATCH = 5, AHEAD_COMMANDS = 20 };

static const char ahead_version[] = "SELECT version FROM aggregates WHERE id = 'acc-ahead'";

static bool a_batch_taken_ahead(void *arg)
{
    (void)arg;
    return metric("processor_batches_taken_ahead_total") >= 1;
}

/*
 * A processor taking batches of AHEAD_BATCH, whose first batch's outbox insert waits for a lock
 * that the connection returned holds in an open transaction, on the first `commands` of
 * AHEAD_COMMANDS commands to one account: an open, then deposits of 1.
 */
static PGconn *outbox_locked(int commands)
{
    processor_free(proc);
    proc = NULL;
    PGconn *locker = PQconnectdb(conninfo);
    ck_assert(PQstatus(locker) == CONNECTION_OK);
    PGresult *r = PQexec(locker, "BEGIN; LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE");
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(locker));
    PQclear(r);
    send_cmd("account.open", "acc-ahead", "{\"owner\":\"ann\"}", NULL, -1, -1, NULL);
    for (int i = 1; i < commands; i++)
        send_cmd("account.deposit", "acc-ahead", "{\"amount\":1}", NULL, -1, -1, NULL);
    cfg.batch_max = AHEAD_BATCH;
    proc = start_processor("proc-ahead");
    return locker;
}

/* All AHEAD_COMMANDS sent, the outbox locked: returns once a batch was taken ahead, nothing
   committed; the next one was polled while the first one's writes wait. */
static PGconn *writes_held_by_a_lock(void)
{
    PGconn *locker = outbox_locked(AHEAD_COMMANDS);
    ck_assert(waitfor_loop(base, a_batch_taken_ahead, NULL, 20000));
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands"), 0);
    return locker;
}

/* Every command applied once, in order. */
static void all_applied_once(void)
{
    ck_assert(wait_for(AHEAD_COMMANDS, 30000, ahead_version));
    ck_assert_int_eq(
        q_int("SELECT (state->>'balance')::int FROM aggregates WHERE id = 'acc-ahead'"),
        AHEAD_COMMANDS - 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE status = 'applied'"),
                     AHEAD_COMMANDS);
    ck_assert_int_eq(q_int("SELECT count(DISTINCT version) FROM outbox"), AHEAD_COMMANDS);
    ck_assert_int_eq(q_int("SELECT count(*) FROM outbox"), AHEAD_COMMANDS);
}

/* The outbox's lock released: every command applied once. */
static void unlocked_all_applied_once(PGconn *locker)
{
    PQclear(PQexec(locker, "ROLLBACK"));
    all_applied_once();
    PQfinish(locker);
}

START_TEST(the_next_batch_is_taken_while_the_writes_run)
{
    PGconn *locker = writes_held_by_a_lock();
    unlocked_all_applied_once(locker);
}
END_TEST

static bool a_batch_waits_for_the_lock(void *arg)
{
    (void)arg;
    return q_int("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                 "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO outbox%%'") > 0;
}

/* The batch in hand, one command, was all there was: the commands that come while its writes
   wait are taken ahead, from the consumer's wake-up, not left until the COMMIT. */
START_TEST(a_batch_that_comes_during_the_writes_is_taken_ahead)
{
    PGconn *locker = outbox_locked(1);
    ck_assert(waitfor_loop(base, a_batch_waits_for_the_lock, NULL, 20000));
    ck_assert_int_eq(metric("processor_batches_taken_ahead_total"), 0);
    for (int i = 1; i < AHEAD_COMMANDS; i++)
        send_cmd("account.deposit", "acc-ahead", "{\"amount\":1}", NULL, -1, -1, NULL);
    ck_assert(waitfor_loop(base, a_batch_taken_ahead, NULL, 20000));
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands"), 0);
    unlocked_all_applied_once(locker);
}
END_TEST

static bool a_write_waits_for_a_lock(void *arg)
{
    (void)arg;
    return q_int("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                 "wait_event_type = 'Lock'") > 0;
}

/*
 * A batch that loses a race on an idempotency key: another writer's row under the key of its
 * second command, uncommitted while the batch writes, commits, and the batch's INSERT fails on
 * (tenant, idempotency_key) (its ON CONFLICT arbiter is the id). The batch is written again
 * whole and finds the key taken; before, it was halved to find a culprit that was not there.
 */
START_TEST(a_batch_that_loses_a_race_on_a_key_is_written_again_whole)
{
    processor_free(proc);
    proc = NULL;
    PGconn *racer = PQconnectdb(conninfo);
    ck_assert(PQstatus(racer) == CONNECTION_OK);
    PGresult *r = PQexec(racer, "BEGIN; INSERT INTO commands (id, tenant, idempotency_key, type, "
                                "aggregate_type, aggregate_id, status) VALUES "
                                "(gen_random_uuid(), 'default', 'race-key', 'account.deposit', "
                                "'account', 'acc-race', 'accepted')");
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(racer));
    PQclear(r);
    /* One batch: one partition (one aggregate), one message set (a producer that lingers; the
       mock cluster answers a fetch with one message set), produced while no processor runs. */
    config_props lp = {0};
    make_props(&lp);
    config_props_set(&lp, "linger.ms", "200");
    char err[512];
    kafka_producer *quick = prod;
    prod = kafka_producer_new(base, &lp, on_delivery, NULL, err, sizeof(err));
    config_props_free(&lp);
    ck_assert_msg(prod != NULL, "%s", err);
    int before = delivered;
    produce_cmd("account.open", "acc-race", "{\"owner\":\"ann\"}", NULL, -1, -1, NULL);
    produce_cmd("account.deposit", "acc-race", "{\"amount\":5}", "race-key", -1, -1, NULL);
    wait_delivered(before + 2);
    kafka_producer_free(prod);
    prod = quick;
    proc = start_processor("proc-race");
    ck_assert(waitfor_loop(base, a_write_waits_for_a_lock, NULL, 20000));
    ck_assert_int_eq(metric("processor_batch_unique_retries_total"), 0);
    r = PQexec(racer, "COMMIT");
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(racer));
    PQclear(r);
    PQfinish(racer);
    ck_assert(wait_for(1, 20000, "SELECT count(*) FROM aggregates WHERE id = 'acc-race'"));
    ck_assert_int_eq(metric("processor_batch_unique_retries_total"), 1);
    ck_assert_int_eq(metric("processor_batches_isolated_total"), 0);
    ck_assert_int_eq(metric("processor_dead_letters_total"), 0);
    /* The open applied; the deposit's key is the other writer's, which holds it. */
    ck_assert_int_eq(q_int("SELECT version FROM aggregates WHERE id = 'acc-race'"), 1);
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands WHERE idempotency_key = 'race-key' AND "
                           "status = 'accepted'"),
                     1);
}
END_TEST

/* Ends the session of the processor's batch waiting for the outbox's lock: the batch fails. */
static void kill_the_waiting_batch(void)
{
    ck_assert(waitfor_loop(base, a_batch_waits_for_the_lock, NULL, 10000));
    ck_assert_int_eq(q_int("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                           "pg_stat_activity WHERE datname = current_database() AND "
                           "wait_event_type = 'Lock' AND query LIKE 'INSERT INTO outbox%%') t"),
                     1);
}

static bool retried(void *arg)
{
    (void)arg;
    return metric("processor_batch_retries_total") >= 1;
}

/* The batch before fails under the one taken ahead: it is retried, then the one ahead runs. */
START_TEST(a_batch_taken_ahead_waits_while_the_one_before_is_retried)
{
    PGconn *locker = writes_held_by_a_lock();
    kill_the_waiting_batch();
    ck_assert(waitfor_loop(base, retried, NULL, 10000));
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands"), 0);
    unlocked_all_applied_once(locker);
}
END_TEST

/* A stop ends the loop once the batch in hand commits; the one taken ahead is left to whoever
   consumes the partition next, here a processor of the same group. */
START_TEST(a_stop_leaves_the_batch_taken_ahead_uncommitted)
{
    PGconn *locker = writes_held_by_a_lock();
    long long taken = polled();
    txloop_stop(processor_loop(proc));
    PQclear(PQexec(locker, "ROLLBACK"));
    struct timeval limit = {20, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    long long committed = q_int("SELECT count(*) FROM commands");
    ck_assert_int_gt(committed, 0);
    ck_assert_int_le(committed, AHEAD_BATCH);
    ck_assert_int_lt(committed, taken);
    ck_assert_int_eq(q_int(ahead_version), committed);
    processor_free(proc);
    proc = start_processor("proc-ahead");
    all_applied_once();
    PQfinish(locker);
}
END_TEST

static void on_limit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    *(int *)arg = 1;
    event_base_loopbreak(base);
}

/* A batch that fails once a stop was asked for is not retried: the loop ends, and a processor of
   the same group applies everything later. Retried, it would wait on the lock again. */
START_TEST(a_stop_ends_the_loop_when_the_batch_in_hand_fails)
{
    PGconn *locker = writes_held_by_a_lock();
    txloop_stop(processor_loop(proc));
    kill_the_waiting_batch();
    int timed_out = 0;
    struct event *limit = evtimer_new(base, on_limit, &timed_out);
    struct timeval tv = {20, 0};
    evtimer_add(limit, &tv);
    event_base_dispatch(base);
    event_free(limit);
    ck_assert_msg(!timed_out, "the loop did not end within 20 s of the failure");
    ck_assert_int_eq(q_int("SELECT count(*) FROM commands"), 0);
    PQclear(PQexec(locker, "ROLLBACK"));
    processor_free(proc);
    proc = start_processor("proc-ahead");
    all_applied_once();
    PQfinish(locker);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("processor");
    TCase *tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, applies_versions_and_offsets);
    tcase_add_test(tc, updated_aggregates_stay_on_their_page);
    tcase_add_test(tc, rejections_are_recorded_without_version_bump);
    tcase_add_test(tc, same_idempotency_key_applies_once);
    tcase_add_test(tc, poison_goes_to_dead_letters_and_partition_flows);
    tcase_add_test(tc, hostile_identities_are_dead_lettered_and_the_partition_flows);
    tcase_add_test(tc, a_command_postgresql_refuses_is_isolated_and_dead_lettered);
    tcase_add_test(tc, a_malformed_outbox_row_is_reported_and_kept);
    tcase_add_test(tc, published_outbox_rows_past_retention_are_purged);
    tcase_add_test(tc, old_claims_are_abandoned_measured_and_still_applied);
    tcase_add_test(tc, events_have_stable_ids_and_replay_changes_nothing);
    tcase_add_test(tc, partitions_start_at_the_offsets_stored_in_postgresql);
    tcase_add_test(tc, reply_goes_to_the_named_partition);
    tcase_add_test(tc, expired_idempotency_records_are_purged);
    tcase_add_test(tc, a_refused_write_rolls_back_the_batch_and_is_retried);
    tcase_add_test(tc, idle_member_keeps_its_partitions);
    tcase_add_test(tc, offsets_of_another_cluster_are_not_trusted);
    tcase_add_test(tc, an_offset_beyond_the_partition_end_is_not_trusted);
    tcase_add_test(tc, a_foreign_offset_stops_the_processor_under_policy_fail);
    tcase_add_test(tc, lag_counts_an_offset_of_another_log_from_the_beginning);
    tcase_add_test(tc, a_transaction_never_goes_on_in_a_new_session);
    tcase_add_test(tc, the_next_batch_is_taken_while_the_writes_run);
    tcase_add_test(tc, a_batch_that_comes_during_the_writes_is_taken_ahead);
    tcase_add_test(tc, a_batch_that_loses_a_race_on_a_key_is_written_again_whole);
    tcase_add_test(tc, a_batch_taken_ahead_waits_while_the_one_before_is_retried);
    tcase_add_test(tc, a_stop_leaves_the_batch_taken_ahead_uncommitted);
    tcase_add_test(tc, a_stop_ends_the_loop_when_the_batch_in_hand_fails);
    tcase_add_test(tc, statements_keep_generic_plans_while_the_statistics_are_current);
    tcase_add_test(tc, a_small_batch_looks_its_aggregates_up_by_key);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
