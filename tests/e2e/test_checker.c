/*
 * test_checker.c: a seeded fault-injection checker in the spirit of Jepsen. Client threads send
 * keyed account commands (open, deposit, withdraw; sync and Prefer: respond-async) to two
 * gateways, retrying with the same Idempotency-Key after errors, timeouts, 409 in-flight and 202
 * (a quarter of the keys take a 202 on trust and never ask again: the pipeline alone must decide
 * them), and record every attempt (time, gateway, key, answer). Meanwhile the nemesis (nemesis.h),
 * at seeded random moments, kills any service with SIGKILL, pauses one past the Kafka session
 * timeout, kills PostgreSQL (-m immediate), kills a Kafka node (real Kafka) or the whole stack,
 * and heals each fault. Then everything is healed, every key not decided yet (and not taken on
 * trust) is retried until it is, the pipeline is drained (bounded waits), and from PostgreSQL and
 * the events topic:
 *   - every answer is one the contract has, and one key never names two command ids;
 *   - every key has one command record, decided as its final answer says (2xx: applied);
 *   - no command is left accepted and no outbox row unpublished;
 *   - each account's version counts its applied commands, its balance is the sum of its applied
 *     deposits minus its applied withdrawals and is never negative;
 *   - versions run 1..n per aggregate, one outbox row per applied command and none for others;
 *   - the events topic holds exactly the outbox's event ids (copies are counted, not failed);
 *   - each projection row equals its aggregate.
 * A failure prints the seed, the failed checks, the history of the keys and accounts involved
 * and the nemesis's log. CQRS_CHECKER_SEED replays a seed (the same schedule of faults and the
 * same commands; the timing differs), CQRS_CHECKER_SECONDS sets the length of the faulty phase.
 */
#include "checkrun.h"
#include "cluster.h"
#include "httpc.h"
#include "nemesis.h"
#include "pgtest.h"
#include "stack.h"
#include "core/strmap.h"

#include <check.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS            8
#define GATEWAYS           2
#define ACCOUNTS           24
#define CLIENT_TIMEOUT_MS  20000 /* above every wait of the gateway: no answer is a hang */
#define OP_BUDGET_MS       20000 /* a client gives up a key after this; the drain takes it up */
#define SESSION_TIMEOUT_MS 6000
#define INFLIGHT_TIMEOUT_S 15
#define DRAIN_MS           (INFLIGHT_TIMEOUT_S * 1000 + 120000)
#define SHOW_LINES         12 /* failure lines printed per check */

enum { OP_OPEN, OP_DEPOSIT, OP_WITHDRAW };
static const char *const kind_names[] = {"open", "deposit", "withdraw"};

/* One key: the command the client wants done, and where its answers ended. */
typedef struct op {
    char key[32];
    int kind, account, amount;
    bool async;
    bool no_retry_after_202; /* a client that trusts a 202 and never asks again */
    bool taken_on_trust;     /* answered 202 and left to the pipeline: decided in PostgreSQL */
    int final_status;        /* the decided answer (200, 201, 409, 422), 0 while there is none */
    char final_problem[40];
    char command_id[40]; /* the first command id an answer named */
    bool got_2xx;        /* some answer was 200, 201 or 202 */
    char violation[120]; /* an answer outside the contract, or "" */
    long long t_final_ms;
    int attempts;
} op;

/* One request of the history. */
typedef struct attempt {
    long long t_ms;
    int dur_ms;
    int owner; /* the op: actors[owner].ops[idx] */
    size_t idx;
    int gateway;
    int status; /* 0: no answer (refused, cut, timed out) */
    char problem[32];
    bool replayed;
} attempt;

/* A client thread (or, after the run, a drain thread): its ops and its attempts. */
typedef struct actor {
    uint64_t rng;
    op *ops;
    size_t nops, capops;
    attempt *hist;
    size_t nhist, caphist;
} actor;

static actor actors[2 * THREADS];
static cluster cl;
static nemesis nem;
static int ports[GATEWAYS];
static atomic_bool stop_load;
static uint64_t seed;
static int run_s;
static atomic_int foreign_ids; /* 503s naming a command id that is not the key's */

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static void *grow(void *p, size_t *cap, size_t size)
{
    *cap = *cap ? 2 * *cap : 256;
    p = realloc(p, *cap * size);
    if (!p)
        abort();
    return p;
}

static op *op_at(int owner, size_t idx)
{
    return &actors[owner].ops[idx];
}

enum verdict { DECIDED, RETRY, TRUSTED, VIOLATION };

/* Sends op (owner, idx) once through a random gateway, records it, and says what comes next. */
static enum verdict send_once(actor *a, int owner, size_t idx)
{
    op *o = op_at(owner, idx);
    int gw = (int)(rnd(&a->rng) % GATEWAYS);
    char headers[160], body[200];
    snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n%s", o->key,
             o->async ? "Prefer: respond-async\r\n" : "");
    if (o->kind == OP_OPEN)
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.open\",\"aggregate_id\":\"acc-%d\",\"payload\":{\"owner\":"
                 "\"o%d\"}}",
                 o->account, o->account);
    else
        snprintf(
            body, sizeof(body),
            "{\"type\":\"account.%s\",\"aggregate_id\":\"acc-%d\",\"payload\":{\"amount\":%d}}",
            kind_names[o->kind], o->account, o->amount);
    long long t = nemesis_now_ms(&nem);
    httpc_response r =
        httpc_request(ports[gw], "POST", "/v1/commands", headers, body, CLIENT_TIMEOUT_MS);
    if (a->nhist == a->caphist)
        a->hist = grow(a->hist, &a->caphist, sizeof(*a->hist));
    attempt *h = &a->hist[a->nhist++];
    memset(h, 0, sizeof(*h));
    h->t_ms = t;
    h->dur_ms = (int)(nemesis_now_ms(&nem) - t);
    h->owner = owner;
    h->idx = idx;
    h->gateway = gw;
    h->status = r.status;
    const char *type = r.json ? json_string_value(json_object_get(r.json, "type")) : NULL;
    if (type)
        snprintf(h->problem, sizeof(h->problem), "%s",
                 strncmp(type, "/problems/", 10) == 0 ? type + 10 : type);
    char buf[16];
    h->replayed = httpc_header(&r, "Idempotent-Replayed", buf, sizeof(buf)) != NULL;
    char cid_buf[40] = "";
    const char *id = r.json ? json_string_value(json_object_get(r.json, "command_id")) : NULL;
    snprintf(cid_buf, sizeof(cid_buf), "%s", id ? id : "");
    /* A 503 names the command id this request would have had, not the key's (the gateway could
       not look the key up): only the other answers speak for the key. */
    const char *cid = *cid_buf && h->status != 503 ? cid_buf : NULL;
    if (*cid_buf && h->status == 503 && *o->command_id && strcmp(cid_buf, o->command_id) != 0)
        atomic_fetch_add(&foreign_ids, 1);
    httpc_free(&r);
    o->attempts++;

    if (cid && !*o->command_id)
        snprintf(o->command_id, sizeof(o->command_id), "%s", cid);
    else if (cid && strcmp(cid, o->command_id) != 0)
        snprintf(o->violation, sizeof(o->violation),
                 "answer %d names command %s, an earlier one %s", h->status, cid, o->command_id);
    if (*o->violation)
        return VIOLATION;
    enum verdict v;
    switch (h->status) {
    case 200:
    case 201:
        o->got_2xx = true;
        v = DECIDED;
        break;
    case 202: /* "in Kafka, will be decided": some clients take that on trust */
        o->got_2xx = true;
        v = o->no_retry_after_202 ? TRUSTED : RETRY;
        o->taken_on_trust = o->no_retry_after_202;
        break;
    case 409: /* in flight: ask again; already-exists: rejected */
        v = strcmp(h->problem, "in-flight") == 0 ? RETRY : DECIDED;
        break;
    case 422: /* the same body under the same key can never be a reuse */
        v = strcmp(h->problem, "idempotency-key-reused") == 0 ? VIOLATION : DECIDED;
        break;
    case 0:
    case 503:
        v = RETRY;
        break;
    default: /* 412 cannot be (no If-Match is sent); 400, 404, 500 ... are not in the contract */
        v = VIOLATION;
        break;
    }
    if (v == VIOLATION)
        snprintf(o->violation, sizeof(o->violation), "answered %d %s", h->status, h->problem);
    if (v == DECIDED) {
        o->final_status = h->status;
        snprintf(o->final_problem, sizeof(o->final_problem), "%s", h->problem);
        o->t_final_ms = nemesis_now_ms(&nem);
    }
    return v;
}

/* Sends op until it is decided, until deadline_ms, or until *stop (may be NULL) is set. */
static void run_op(actor *a, int owner, size_t idx, long long deadline_ms, const atomic_bool *stop)
{
    int backoff = 100;
    while (send_once(a, owner, idx) == RETRY) {
        if ((stop && atomic_load(stop)) || nemesis_now_ms(&nem) >= deadline_ms)
            return;
        usleep((useconds_t)(backoff + (int)(rnd(&a->rng) % 100)) * 1000);
        backoff = backoff < 1000 ? 2 * backoff : 1000;
    }
}

static void *client(void *arg)
{
    int t = (int)(intptr_t)arg;
    actor *a = &actors[t];
    while (!atomic_load(&stop_load)) {
        if (a->nops == a->capops)
            a->ops = grow(a->ops, &a->capops, sizeof(*a->ops));
        size_t idx = a->nops++;
        op *o = &a->ops[idx];
        memset(o, 0, sizeof(*o));
        snprintf(o->key, sizeof(o->key), "k%d-%zu", t, idx);
        int dice = (int)(rnd(&a->rng) % 100);
        o->kind = dice < 8 ? OP_OPEN : dice < 65 ? OP_DEPOSIT : OP_WITHDRAW;
        o->account = (int)(rnd(&a->rng) % ACCOUNTS);
        o->amount = 1 + (int)(rnd(&a->rng) % (o->kind == OP_WITHDRAW ? 60 : 50));
        o->async = rnd(&a->rng) % 2;
        o->no_retry_after_202 = rnd(&a->rng) % 4 == 0;
        run_op(a, t, idx, nemesis_now_ms(&nem) + OP_BUDGET_MS, &stop_load);
    }
    return NULL;
}

/* The keys the clients left undecided, for the drain threads. */
static struct {
    int *owner;
    size_t *idx;
    size_t n;
    atomic_size_t next;
    long long deadline_ms;
} pending;

static void *drainer(void *arg)
{
    actor *a = &actors[THREADS + (int)(intptr_t)arg];
    for (size_t i; (i = atomic_fetch_add(&pending.next, 1)) < pending.n;)
        run_op(a, pending.owner[i], pending.idx[i], pending.deadline_ms, NULL);
    return NULL;
}

/* --- the report ------------------------------------------------------------------------------ */

static int failures;
static int check_lines;
static strmap *bad_keys, *bad_accounts; /* what the failure report shows the history of */

static void check_begin(void)
{
    check_lines = 0;
}

/* One failed fact; key and account (may be NULL / -1) name what to show the history of. */
static void bad(const char *key, int account, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bad(const char *key, int account, const char *fmt, ...)
{
    failures++;
    if (key && strmap_size(bad_keys) < 8)
        strmap_put(bad_keys, key, bad_keys);
    if (account >= 0 && strmap_size(bad_accounts) < 3) {
        char acc[16];
        snprintf(acc, sizeof(acc), "%d", account);
        strmap_put(bad_accounts, acc, bad_accounts);
    }
    if (check_lines++ >= SHOW_LINES) {
        if (check_lines == SHOW_LINES + 1)
            fprintf(stderr, "FAIL: ... (more of the same)\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static int account_of(const char *aggregate_id)
{
    return aggregate_id && strncmp(aggregate_id, "acc-", 4) == 0 ? atoi(aggregate_id + 4) : -1;
}

static void print_attempt(const attempt *h)
{
    const op *o = op_at(h->owner, h->idx);
    fprintf(stderr, "  t=%8.3f s %+6d ms  gw%d  %-9s %-8s acc-%-3d %3d %-5s -> %3d %s%s\n",
            (double)h->t_ms / 1000, h->dur_ms, h->gateway, o->key, kind_names[o->kind], o->account,
            o->amount, o->async ? "async" : "sync", h->status, h->problem,
            h->replayed ? " (replayed)" : "");
}

static void print_op(const op *o)
{
    fprintf(stderr, "  %-9s %-8s acc-%-3d %3d %-5s: final %d %s after %d attempt(s)%s%s%s%s\n",
            o->key, kind_names[o->kind], o->account, o->amount, o->async ? "async" : "sync",
            o->final_status, o->final_problem, o->attempts, o->got_2xx ? ", some 2xx" : "",
            o->taken_on_trust ? ", 202 taken on trust (decision from PostgreSQL)" : "",
            *o->violation ? ", VIOLATION: " : "", o->violation);
}

/* Prints the attempts for which want(op, arg) holds, up to max lines. */
static void print_history(bool (*want)(const op *, const void *), const void *arg, int max)
{
    /* The actors' histories are each in time order: merge them. */
    size_t pos[2 * THREADS] = {0};
    for (int shown = 0; shown < max;) {
        int best = -1;
        for (int a = 0; a < 2 * THREADS; a++) {
            while (pos[a] < actors[a].nhist &&
                   !want(op_at(actors[a].hist[pos[a]].owner, actors[a].hist[pos[a]].idx), arg))
                pos[a]++;
            if (pos[a] < actors[a].nhist &&
                (best < 0 || actors[a].hist[pos[a]].t_ms < actors[best].hist[pos[best]].t_ms))
                best = a;
        }
        if (best < 0)
            return;
        print_attempt(&actors[best].hist[pos[best]++]);
        shown++;
    }
    fprintf(stderr, "  ... (cut at %d lines)\n", max);
}

static bool key_is(const op *o, const void *key)
{
    return strcmp(o->key, key) == 0;
}

static bool account_is(const op *o, const void *account)
{
    return o->account == *(const int *)account;
}

static void show_key(const char *key, void *value, void *arg)
{
    (void)value;
    (void)arg;
    fprintf(stderr, "history of key %s:\n", key);
    print_history(key_is, key, 60);
}

static void show_account(const char *acc, void *value, void *arg)
{
    (void)value;
    (void)arg;
    int account = atoi(acc);
    fprintf(stderr, "keys of acc-%d, as the clients saw them decided:\n", account);
    for (int a = 0; a < THREADS; a++)
        for (size_t i = 0; i < actors[a].nops; i++)
            if (actors[a].ops[i].account == account && actors[a].ops[i].final_status / 100 == 2)
                print_op(&actors[a].ops[i]);
    fprintf(stderr, "history of acc-%d:\n", account);
    print_history(account_is, &account, 200);
}

/* --- the checks ------------------------------------------------------------------------------- */

static PGresult *query(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    return res;
}

/* Fails once for every row sql returns (key in column 0, aggregate id in column 1), saying what. */
static void bad_rows(PGconn *db, const char *sql, const char *what)
{
    check_begin();
    PGresult *res = query(db, sql);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *key = PQgetisnull(res, i, 0) ? NULL : PQgetvalue(res, i, 0);
        const char *agg = PQnfields(res) > 1 ? PQgetvalue(res, i, 1) : NULL;
        bad(key, account_of(agg), "%s: key %s, aggregate %s", what, key ? key : "(none)",
            agg ? agg : "-");
    }
    PQclear(res);
}

/* Every key: one record, decided as its final answer says; no record the clients did not make. */
static void check_records(PGconn *db)
{
    PGresult *res = query(db, "SELECT idempotency_key, id, status, coalesce(http_status, 0), "
                              "aggregate_id FROM commands");
    strmap *rows = strmap_new();
    for (int i = 0; i < PQntuples(res); i++)
        strmap_put(rows, PQgetvalue(res, i, 0), (void *)(intptr_t)(i + 1));
    strmap *keys = strmap_new();
    check_begin();
    for (int a = 0; a < THREADS; a++) {
        for (size_t i = 0; i < actors[a].nops; i++) {
            op *o = &actors[a].ops[i];
            strmap_put(keys, o->key, o);
            if (*o->violation) {
                bad(o->key, o->account, "%s: %s", o->key, o->violation);
                continue;
            }
            int row = (int)(intptr_t)strmap_get(rows, o->key) - 1;
            if (o->taken_on_trust) {
                /* Never asked again: PostgreSQL alone says how it was decided. */
                const char *st = row < 0 ? "none" : PQgetvalue(res, row, 2);
                if (strcmp(st, "applied") != 0 && strcmp(st, "rejected") != 0) {
                    bad(o->key, o->account, "%s answered 202 was never decided (record: %s)",
                        o->key, st);
                    continue;
                }
                o->final_status = atoi(PQgetvalue(res, row, 3));
            }
            if (o->final_status == 0) {
                bad(o->key, o->account, "%s never decided (record: %s)%s", o->key,
                    row < 0 ? "none" : PQgetvalue(res, row, 2),
                    o->got_2xx ? "; it was answered 2xx" : "");
                continue;
            }
            bool applied = o->final_status / 100 == 2;
            if (row < 0) {
                bad(o->key, o->account, "%s answered %d has no command record", o->key,
                    o->final_status);
                continue;
            }
            const char *status = PQgetvalue(res, row, 2);
            if (strcmp(status, applied ? "applied" : "rejected") != 0 ||
                atoi(PQgetvalue(res, row, 3)) != o->final_status)
                bad(o->key, o->account, "%s answered %d, but its record is %s %s", o->key,
                    o->final_status, status, PQgetvalue(res, row, 3));
            if (*o->command_id && strcmp(o->command_id, PQgetvalue(res, row, 1)) != 0)
                bad(o->key, o->account, "%s answered command %s, its record is command %s", o->key,
                    o->command_id, PQgetvalue(res, row, 1));
        }
    }
    check_begin();
    for (int i = 0; i < PQntuples(res); i++)
        if (!strmap_get(keys, PQgetvalue(res, i, 0)))
            bad(NULL, account_of(PQgetvalue(res, i, 4)), "a record no client made: key %s",
                PQgetvalue(res, i, 0));
    strmap_free(keys);
    strmap_free(rows);
    PQclear(res);
}

/* Each account: the version and balance its decided keys make, from the clients' view. */
static void check_accounts(PGconn *db)
{
    long long version[ACCOUNTS] = {0}, balance[ACCOUNTS] = {0};
    for (int a = 0; a < THREADS; a++) {
        for (size_t i = 0; i < actors[a].nops; i++) {
            const op *o = &actors[a].ops[i];
            if (o->final_status / 100 != 2)
                continue;
            version[o->account]++;
            balance[o->account] += o->kind == OP_DEPOSIT    ? o->amount
                                   : o->kind == OP_WITHDRAW ? -o->amount
                                                            : 0;
        }
    }
    PGresult *res = query(db, "SELECT id, version, (state->>'balance')::bigint FROM aggregates "
                              "WHERE type = 'account'");
    long long got_version[ACCOUNTS] = {0}, got_balance[ACCOUNTS] = {0};
    check_begin();
    for (int i = 0; i < PQntuples(res); i++) {
        int acc = account_of(PQgetvalue(res, i, 0));
        if (acc < 0 || acc >= ACCOUNTS) {
            bad(NULL, -1, "an aggregate no client made: %s", PQgetvalue(res, i, 0));
            continue;
        }
        got_version[acc] = atoll(PQgetvalue(res, i, 1));
        got_balance[acc] = atoll(PQgetvalue(res, i, 2));
    }
    PQclear(res);
    for (int acc = 0; acc < ACCOUNTS; acc++) {
        if (got_version[acc] != version[acc] || got_balance[acc] != balance[acc])
            bad(NULL, acc,
                "acc-%d is at version %lld with balance %lld; its keys answered 2xx make version "
                "%lld, balance %lld",
                acc, got_version[acc], got_balance[acc], version[acc], balance[acc]);
        if (got_balance[acc] < 0)
            bad(NULL, acc, "acc-%d is overdrawn: %lld", acc, got_balance[acc]);
    }
}

/* The events topic holds exactly the outbox's event ids. */
static void check_events(PGconn *db, size_t *copies, size_t *distinct)
{
    PGresult *res = query(db, "SELECT tenant || '/' || aggregate_type || '/' || aggregate_id || "
                              "'/' || version, aggregate_id FROM outbox");
    strmap *seen = strmap_new();
    *distinct = cluster_read_events(&cl, seen, (size_t)PQntuples(res), 30000, copies);
    strmap *want = strmap_new();
    check_begin();
    for (int i = 0; i < PQntuples(res); i++) {
        strmap_put(want, PQgetvalue(res, i, 0), want);
        if (!strmap_get(seen, PQgetvalue(res, i, 0)))
            bad(NULL, account_of(PQgetvalue(res, i, 1)), "event %s is not on the events topic",
                PQgetvalue(res, i, 0));
    }
    if (*distinct != strmap_size(want))
        bad(NULL, -1, "%zu distinct event ids on the topic, %zu in the outbox", *distinct,
            strmap_size(want));
    strmap_free(want);
    strmap_free(seen);
    PQclear(res);
}

static const char stale_projection[] =
    "SELECT '', a.id FROM aggregates a LEFT JOIN projection_account p ON p.tenant = a.tenant AND "
    "p.id = a.id WHERE a.type = 'account' AND (p.id IS NULL OR p.version <> a.version OR p.state "
    "IS DISTINCT FROM a.state OR p.balance IS DISTINCT FROM (a.state->>'balance')::bigint OR "
    "p.owner IS DISTINCT FROM a.state->>'owner' OR p.status IS DISTINCT FROM a.state->>'status') "
    "UNION ALL SELECT '', p.id FROM projection_account p WHERE NOT EXISTS (SELECT 1 FROM "
    "aggregates a WHERE a.tenant = p.tenant AND a.type = 'account' AND a.id = p.id)";

START_TEST(every_answer_holds_after_the_faults)
{
    bad_keys = strmap_new();
    bad_accounts = strmap_new();
    for (int t = 0; t < 2 * THREADS; t++)
        actors[t].rng = seed * 1000003ULL + (uint64_t)t + 1;
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, client, (void *)(intptr_t)t);
    nemesis_run(&nem, run_s * 1000, &stop_load);
    atomic_store(&stop_load, true);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);

    /* Heal, then retry every key the clients left undecided, as a client would. */
    nemesis_heal(&nem);
    long long t_heal = nemesis_now_ms(&nem);
    for (int g = 0; g < GATEWAYS; g++) {
        if (!cluster_wait_ready(ports[g], 90000))
            nemesis_note(&nem, "NOTE: gateway-%d not ready 90 s after the heal", g);
    }
    nemesis_note(&nem, "gateways ready");
    size_t nops = 0, nattempts = 0;
    for (int a = 0; a < THREADS; a++)
        nops += actors[a].nops;
    pending.owner = calloc(nops, sizeof(*pending.owner));
    pending.idx = calloc(nops, sizeof(*pending.idx));
    for (int a = 0; a < THREADS; a++) {
        for (size_t i = 0; i < actors[a].nops; i++) {
            const op *o = &actors[a].ops[i];
            if (o->final_status == 0 && !*o->violation && !o->taken_on_trust) {
                pending.owner[pending.n] = a;
                pending.idx[pending.n++] = i;
            }
        }
    }
    pending.deadline_ms = nemesis_now_ms(&nem) + DRAIN_MS;
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, drainer, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    long long slowest = 0;
    for (size_t i = 0; i < pending.n; i++) {
        const op *o = op_at(pending.owner[i], pending.idx[i]);
        if (o->final_status && o->t_final_ms - t_heal > slowest)
            slowest = o->t_final_ms - t_heal;
    }
    nemesis_note(&nem,
                 "%zu keys left undecided by the clients retried; the last decided %.1f s "
                 "after the heal",
                 pending.n, (double)slowest / 1000);

    PGconn *db = PQconnectdb(cl.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    /* Drain: every command decided, every event published, the projection caught up. */
    long long accepted =
        pgtest_wait_int(db, "SELECT count(*) FROM commands WHERE status = 'accepted'", 0, 60000);
    long long unpublished =
        pgtest_wait_int(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL", 0, 60000);
    char count_stale[sizeof(stale_projection) + 64];
    snprintf(count_stale, sizeof(count_stale), "SELECT count(*) FROM (%s) s", stale_projection);
    long long stale = pgtest_wait_int(db, count_stale, 0, 60000);
    nemesis_note(&nem, "drained: %lld accepted, %lld unpublished, %lld stale projection rows",
                 accepted, unpublished, stale);

    check_records(db);
    bad_rows(db,
             "SELECT idempotency_key, aggregate_id FROM commands WHERE status = 'accepted' "
             "ORDER BY created_at",
             "command left accepted");
    bad_rows(db,
             "SELECT c.idempotency_key, o.aggregate_id FROM outbox o LEFT JOIN commands c ON "
             "c.id = o.command_id WHERE o.published_at IS NULL",
             "outbox row never published");
    check_accounts(db);
    bad_rows(db,
             "SELECT NULL, aggregate_id FROM outbox GROUP BY tenant, aggregate_type, aggregate_id "
             "HAVING count(*) <> max(version) OR min(version) <> 1",
             "versions not 1..n in the outbox");
    bad_rows(db,
             "SELECT NULL, a.id FROM aggregates a WHERE a.version <> (SELECT count(*) FROM outbox "
             "o WHERE o.tenant = a.tenant AND o.aggregate_type = a.type AND o.aggregate_id = a.id)",
             "aggregate version differs from its outbox rows");
    bad_rows(db,
             "SELECT c.idempotency_key, min(o.aggregate_id) FROM outbox o LEFT JOIN commands c ON "
             "c.id = o.command_id GROUP BY o.command_id, c.idempotency_key HAVING count(*) > 1",
             "command with two events (applied twice)");
    bad_rows(db,
             "SELECT c.idempotency_key, c.aggregate_id FROM commands c WHERE c.status = 'applied' "
             "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.command_id = c.id)",
             "applied command without event");
    bad_rows(db,
             "SELECT c.idempotency_key, o.aggregate_id FROM outbox o LEFT JOIN commands c ON "
             "c.id = o.command_id WHERE c.status IS DISTINCT FROM 'applied'",
             "event of a command not applied");
    bad_rows(db,
             "SELECT c.idempotency_key, c.aggregate_id FROM commands c JOIN outbox o ON "
             "o.command_id = c.id WHERE c.version IS DISTINCT FROM o.version",
             "command's version differs from its event's");
    bad_rows(db, stale_projection, "projection row differs from its aggregate");
    size_t copies = 0, distinct = 0;
    check_events(db, &copies, &distinct);

    /* What happened, for the record. */
    int by_status[600] = {0}, finals[600] = {0}, undecided = 0, trusted = 0;
    for (int a = 0; a < 2 * THREADS; a++) {
        nattempts += actors[a].nhist;
        for (size_t i = 0; i < actors[a].nhist; i++)
            by_status[actors[a].hist[i].status % 600]++;
        for (size_t i = 0; i < actors[a].nops; i++) {
            finals[actors[a].ops[i].final_status % 600]++;
            undecided += actors[a].ops[i].final_status == 0;
            trusted += actors[a].ops[i].taken_on_trust;
        }
    }
    fprintf(stderr,
            "checker: seed %llu: %zu keys, %zu requests (%d x 200, %d x 201, %d x 202, %d x 409, "
            "%d x 422, %d x 503, %d unanswered); decided: %d applied, %d rejected, %d undecided "
            "(%d keys took a 202 on trust); %zu events on the topic (%zu copies read)\n",
            (unsigned long long)seed, nops, nattempts, by_status[200], by_status[201],
            by_status[202], by_status[409], by_status[422], by_status[503], by_status[0],
            finals[200] + finals[201], finals[409] + finals[422], undecided, trusted, distinct,
            copies);
    if (atomic_load(&foreign_ids))
        fprintf(stderr, "checker: note: %d answers 503 named a command id other than their key's\n",
                atomic_load(&foreign_ids));
    if (nem.crashed)
        bad(NULL, -1, "%d service process(es) exited on their own (see the nemesis log)",
            nem.crashed);
    if (failures) {
        fprintf(stderr,
                "\nchecker FAILED with seed %llu (replay: CQRS_CHECKER_SEED=%llu "
                "CQRS_CHECKER_SECONDS=%d)\n",
                (unsigned long long)seed, (unsigned long long)seed, run_s);
        strmap_each(bad_keys, show_key, NULL);
        strmap_each(bad_accounts, show_account, NULL);
        fprintf(stderr, "nemesis:\n");
        nemesis_print(&nem, stderr);
    }
    PQfinish(db);
    free(pending.owner);
    free(pending.idx);
    strmap_free(bad_keys);
    strmap_free(bad_accounts);
    ck_assert_msg(failures == 0, "%d checks failed (seed %llu)", failures,
                  (unsigned long long)seed);
    /* The workload ran: an idle 2-core machine makes over 1,000 keys a round, one loaded by
       other test runs 88. The checks above, not this count, are what the test is about. */
    ck_assert_int_gt(nops, 50);
}
END_TEST

int main(void)
{
    const char *s = getenv("CQRS_CHECKER_SEED");
    seed = s && *s ? strtoull(s, NULL, 10)
                   : ((uint64_t)time(NULL) * 2654435761ULL) ^ (uint64_t)getpid();
    s = getenv("CQRS_CHECKER_SECONDS");
    run_s = s && atoi(s) > 0 ? atoi(s) : 60;
    /* The services take every CQRS_* variable for a configuration key: not these. */
    unsetenv("CQRS_CHECKER_SEED");
    unsetenv("CQRS_CHECKER_SECONDS");
    fprintf(stderr, "checker: seed %llu, %d s of faults (replay: CQRS_CHECKER_SEED=%llu)\n",
            (unsigned long long)seed, run_s, (unsigned long long)seed);
    if (cluster_init(&cl, "checker") != 0)
        return EXIT_FAILURE;
    /* Pauses last past the session timeout, so that the group moves the victim's partitions. */
    nemesis_init(&nem, &cl, seed, SESSION_TIMEOUT_MS + 1000);
    char session[64], inflight[64];
    snprintf(session, sizeof(session), "--kafka.session.timeout.ms=%d", SESSION_TIMEOUT_MS);
    snprintf(inflight, sizeof(inflight), "--idempotency.inflight_timeout_s=%d", INFLIGHT_TIMEOUT_S);
    for (int i = 0; i < 2; i++) {
        /* Static membership on a broker, as test_chaos: a restarted processor takes its
           partitions back at once (the mock cluster holds a returning static member back). */
        char instance[96], name[32];
        snprintf(instance, sizeof(instance), "--kafka.group.instance.id=%sprocessor-%d", cl.prefix,
                 i);
        snprintf(name, sizeof(name), "processor-%d", i);
        const char *extra[] = {"--retry.max_ms=1000", session, cl.mock ? NULL : instance, NULL};
        nemesis_add(&nem, name, "state-processor", i, extra);
    }
    for (int g = 0; g < GATEWAYS; g++) {
        char port[32], name[32];
        ports[g] = stack_free_port();
        snprintf(port, sizeof(port), "--http.port=%d", ports[g]);
        snprintf(name, sizeof(name), "gateway-%d", g);
        const char *extra[] = {port, "--workers=2", inflight, session, NULL};
        nemesis_add(&nem, name, "command-gateway", g, extra);
    }
    const char *proj[] = {session, NULL};
    nemesis_add(&nem, "projector", "projector", 0, proj);

    int failed = 1;
    bool ready = true;
    for (int g = 0; g < GATEWAYS && ready; g++)
        ready = cluster_wait_ready(ports[g], 90000);
    if (ready) {
        Suite *suite = suite_create("checker");
        TCase *tc = tcase_create("checker");
        tcase_set_timeout(tc, run_s + 900.0);
        tcase_add_test(tc, every_answer_holds_after_the_faults);
        suite_add_tcase(suite, tc);
        failed = check_run(suite, CK_NOFORK); /* the services are this process's children */
    } else {
        fprintf(stderr, "the gateways were not ready within 90 s\n");
    }
    failed = nemesis_finish(&nem, &cl, failed);
    for (int a = 0; a < 2 * THREADS; a++) {
        free(actors[a].ops);
        free(actors[a].hist);
    }
    if (failed)
        fprintf(stderr, "checker: seed %llu (replay: CQRS_CHECKER_SEED=%llu)\n",
                (unsigned long long)seed, (unsigned long long)seed);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
