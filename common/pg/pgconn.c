/* pgconn.c: non-blocking libpq connection in pipeline mode, driven by libevent, with reconnects. */
#include "pg/pgconn.h"

#include "core/ids.h"
#include "core/log.h"
#include "core/strmap.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PGCONN_BACKOFF_MIN_MS     100
#define PGCONN_BACKOFF_MAX_MS     5000
#define PGCONN_CONNECT_TIMEOUT_MS 10000
#define PGCONN_DEFAULT_MAX        10000

typedef enum {
    PGC_WAITING,    /* backoff timer armed, no PGconn */
    PGC_CONNECTING, /* PQconnectPoll in progress */
    PGC_READY,      /* connected, pipeline mode on */
} pgc_state;

/* One queued query; sql and values are owned copies. */
typedef struct pgq {
    struct pgq *next;
    char *sql;
    int nparams;
    char **values;
    pgconn_cb cb;
    void *arg;
    bool prepare;        /* run as a prepared statement of the session */
    bool preparing;      /* sent with its Parse: the first result is the Parse's */
    PGresult *prep_fail; /* the Parse's error, reported instead of the aborted execution */
    char stmt[24];       /* the statement's name in the session */
} pgq;

/* A statement prepared in the session, or being prepared. */
typedef struct {
    char name[24];
    bool parsed; /* the server confirmed its Parse */
} pgstmt;

struct pgconn_result {
    pgconn_status status;
    PGresult *res;   /* NULL for PGCONN_DISCONNECTED and synthetic errors */
    const char *msg; /* primary error message or "" */
};

struct pgconn {
    struct event_base *base;
    char *conninfo;
    pgconn_state_cb on_state;
    long long down_since_us; /* ids_monotonic_us() when the session was lost (or first sought) */
    void *state_arg;
    pgconn_notify_cb on_notify;
    void *notify_arg;
    bool read_only; /* sessions start with default_transaction_read_only=on */
    char *options;  /* the sessions' "options" (session_prepare()); NULL: the conninfo as is */
    char *name;     /* fallback_application_name (pgconn_set_name()); NULL: none */
    bool primary;   /* ask for target_session_attrs=primary (session_prepare()) */

    pgc_state state;
    PGconn *pg;
    struct event *ev_conn;  /* one-shot socket wait while connecting; the fd may change */
    struct event *ev_read;  /* persistent EV_READ once connected */
    struct event *ev_write; /* persistent EV_WRITE, added only while output is buffered */
    struct event *ev_timer; /* backoff delay, or connect timeout while connecting */
    struct event *ev_kick;  /* manual-activated: send what pgconn_query() queued */
    int backoff_ms;
    unsigned connects;

    /* FIFO of pending queries: [head, unsent) are sent and awaiting results, [unsent, end) not. */
    pgq *head, *tail, *unsent;
    size_t count, max_pending;
    PGresult *held; /* result of the head query, delivered at the NULL that ends it */
    bool broken;    /* a send failed: treat as connection loss at the next chance */
    int depth;      /* nesting of our libevent callbacks; free is deferred while > 0 */
    bool freeing;   /* pgconn_free() was called; release when depth drops to 0 */

    strmap *prepared; /* sql -> its pgstmt (owned) in this session */
    unsigned nprepared;
};

static void on_conn_io(evutil_socket_t fd, short what, void *arg);
static void on_io(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void on_kick(evutil_socket_t fd, short what, void *arg);

/* libpq notices (NOTICE, WARNING from the server) go to the JSON logger. */
static void notice_to_log(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg) {
        msg = PQresultErrorMessage(res);
    }
    log_warn("postgres %s: %s", sev ? sev : "NOTICE", msg);
}

/* Logs libpq's connection error, its multi-line text folded onto one line. */
static void log_pg_error(const char *what, PGconn *pg, int retry_ms)
{
    const char *m = pg ? PQerrorMessage(pg) : "out of memory";
    char msg[512];
    size_t n = 0;
    for (; *m && n < sizeof(msg) - 1; m++) {
        bool space = *m == '\n' || *m == '\t' || *m == ' ';
        if (!space) {
            msg[n++] = *m;
        } else if (n > 0 && msg[n - 1] != ' ') {
            msg[n++] = ' ';
        }
    }
    while (n > 0 && msg[n - 1] == ' ') {
        n--;
    }
    msg[n] = '\0';
    log_warn("postgres %s: %s; retrying in %d ms", what, msg, retry_ms);
}

static void pgq_free(pgq *q)
{
    for (int i = 0; i < q->nparams; i++) {
        free(q->values[i]);
    }
    free(q->values);
    free(q->sql);
    PQclear(q->prep_fail);
    free(q);
}

/* Removes the head query; the caller then owns it. */
static pgq *pop_head(pgconn *c)
{
    pgq *q = c->head;
    if (c->unsent == q) {
        c->unsent = q->next;
    }
    c->head = q->next;
    if (!c->head) {
        c->tail = NULL;
    }
    c->count--;
    return q;
}

/* Pops the head query and calls its callback with res; returns false if the callback freed c. */
static bool deliver_head(pgconn *c, const pgconn_result *res)
{
    pgq *q = pop_head(c);
    q->cb(res, q->arg);
    pgq_free(q);
    return !c->freeing;
}

static void set_timer(pgconn *c, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
    evtimer_add(c->ev_timer, &tv);
}

static void free_stmt(const char *sql, void *stmt, void *arg)
{
    (void)sql, (void)arg;
    free(stmt);
}

static void free_prepared(pgconn *c)
{
    strmap_each(c->prepared, free_stmt, NULL);
    strmap_free(c->prepared);
    c->prepared = NULL;
}

/* Drops the PGconn and its socket events; queries stay queued. */
static void close_pg(pgconn *c)
{
    if (c->ev_conn) {
        event_free(c->ev_conn);
        c->ev_conn = NULL;
    }
    if (c->ev_read) {
        event_free(c->ev_read);
        c->ev_read = NULL;
    }
    if (c->ev_write) {
        event_free(c->ev_write);
        c->ev_write = NULL;
    }
    event_del(c->ev_timer);
    event_del(c->ev_kick);
    PQclear(c->held);
    c->held = NULL;
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->broken = false;
    c->unsent = c->head;
    free_prepared(c); /* they belonged to the session */
    c->prepared = strmap_new();
}

/* Waits for the backoff delay, then tries to connect again. */
static void schedule_retry(pgconn *c)
{
    close_pg(c);
    c->state = PGC_WAITING;
    set_timer(c, c->backoff_ms);
    c->backoff_ms =
        c->backoff_ms * 2 > PGCONN_BACKOFF_MAX_MS ? PGCONN_BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/*
 * The established connection is gone. Every pending query fails, the unsent ones too: they may
 * belong to a transaction whose BEGIN already ran, and resending them on a new session would run
 * them outside it. Queries queued by the callbacks below wait for the next connection.
 * Returns false if a callback freed c.
 */
static bool connection_lost(pgconn *c, const char *why)
{
    log_warn("postgres connection lost: %s", why);
    c->down_since_us = ids_monotonic_us();
    size_t n = c->count;
    schedule_retry(c);
    if (c->on_state) {
        c->on_state(false, c->state_arg);
        if (c->freeing) {
            return false;
        }
    }
    /* The n that were pending are taken out of the queue first: a callback below may cancel a
       query (pgconn_cancel) or queue one, and neither must change which queries fail here. */
    pgq *failed = NULL, **end = &failed;
    for (size_t i = 0; i < n && c->head; i++) {
        *end = pop_head(c);
        end = &(*end)->next;
    }
    *end = NULL;
    const pgconn_result r = {.status = PGCONN_DISCONNECTED, .res = NULL, .msg = "connection lost"};
    while (failed) {
        pgq *q = failed;
        failed = q->next;
        q->cb(&r, q->arg); /* after pgconn_free() too: each query's callback runs once */
        pgq_free(q);
    }
    return !c->freeing;
}

typedef enum { SEND_OK, SEND_WAIT, SEND_FAILED } send_status;

/*
 * Sends q as a prepared statement: the session's statement for its text, or a new one parsed in
 * the same sync segment, so that a Parse that fails aborts only this execution. A text whose
 * Parse is still unanswered waits for the answer (SEND_WAIT): should that Parse fail, this
 * execution would fail too, with an error about a missing statement rather than the real one.
 */
static send_status send_prepared(pgconn *c, pgq *q)
{
    const pgstmt *st = strmap_get(c->prepared, q->sql);
    if (st && !st->parsed)
        return SEND_WAIT;
    if (!st) {
        pgstmt *ns = xcalloc(1, sizeof(*ns));
        snprintf(ns->name, sizeof(ns->name), "cqrs_%u", ++c->nprepared);
        if (!PQsendPrepare(c->pg, ns->name, q->sql, q->nparams, NULL)) {
            free(ns);
            return SEND_FAILED;
        }
        strmap_put(c->prepared, q->sql, ns);
        q->preparing = true;
        st = ns;
    }
    snprintf(q->stmt, sizeof(q->stmt), "%s", st->name);
    return PQsendQueryPrepared(c->pg, q->stmt, q->nparams, (const char *const *)q->values, NULL,
                               NULL, 0) == 1
               ? SEND_OK
               : SEND_FAILED;
}

/*
 * Sends the unsent queries in order, each followed by a sync point, up to one that must wait for
 * a Parse. Sets c->broken on failure.
 */
static void send_unsent(pgconn *c)
{
    for (; c->unsent; c->unsent = c->unsent->next) {
        pgq *q = c->unsent;
        send_status s = SEND_OK;
        if (q->prepare)
            s = send_prepared(c, q);
        else if (!PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, (const char *const *)q->values,
                                    NULL, NULL, 0))
            s = SEND_FAILED;
        if (s == SEND_WAIT)
            return; /* sent again once the Parse is answered (drain, then send) */
        if (s == SEND_FAILED || !PQpipelineSync(c->pg)) {
            c->broken = true;
            return;
        }
    }
}

/*
 * The Parse of the head query ended with result r (owned). A failure is what the query reports,
 * and the text is parsed again on its next use.
 */
static void parsed(pgconn *c, pgq *q, PGresult *r)
{
    q->preparing = false;
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        pgstmt *st = strmap_get(c->prepared, q->sql);
        if (st)
            st->parsed = true;
        PQclear(r);
        return;
    }
    q->prep_fail = r;
    free(strmap_remove(c->prepared, q->sql));
}

/* Pushes buffered output; keeps EV_WRITE armed only while some remains. */
static void flush_output(pgconn *c)
{
    int r = PQflush(c->pg);
    if (r < 0) {
        c->broken = true;
    } else if (r > 0) {
        event_add(c->ev_write, NULL);
    } else {
        event_del(c->ev_write);
    }
}

/* A FATAL or PANIC error means the server is ending the session (e.g. pg_terminate_backend). */
static bool is_session_fatal(const PGresult *r)
{
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    return sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0);
}

/* Maps a query's final PGresult to a callback result. */
static pgconn_result make_result(PGresult *r)
{
    pgconn_result out = {.status = PGCONN_ERROR, .res = r, .msg = ""};
    switch (PQresultStatus(r)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        out.status = PGCONN_OK;
        break;
    case PGRES_PIPELINE_ABORTED:
        out.msg = "pipeline aborted";
        break;
    default: {
        const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        out.msg = m ? m : PQresultErrorMessage(r);
        if (!*out.msg) {
            out.msg = PQresStatus(PQresultStatus(r));
        }
        break;
    }
    }
    return out;
}

/*
 * Hands every complete result in libpq's input buffer to its callback. Per query libpq yields the
 * result, a NULL that ends it, then the PGRES_PIPELINE_SYNC of its sync point. Returns false if c
 * was freed by a callback or the connection was lost (c->state is then no longer PGC_READY).
 */
static bool drain_results(pgconn *c)
{
    while (c->state == PGC_READY && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (!c->held) {
                break; /* nothing in flight */
            }
            PGresult *held = c->held;
            c->held = NULL;
            if (PQstatus(c->pg) == CONNECTION_BAD || is_session_fatal(held)) {
                /* The error is the connection's death, not the query's outcome. */
                char why[256];
                snprintf(why, sizeof(why), "%s", make_result(held).msg);
                PQclear(held);
                (void)connection_lost(c, why);
                return false;
            }
            if (!c->head) {
                log_warn("postgres: result with no query waiting for it, dropped");
                PQclear(held);
                continue;
            }
            if (c->head->preparing) {
                parsed(c, c->head, held);
                continue;
            }
            if (c->head->prep_fail) { /* the execution was aborted by it */
                PQclear(held);
                held = c->head->prep_fail;
                c->head->prep_fail = NULL;
            }
            pgconn_result res = make_result(held);
            bool alive = deliver_head(c, &res);
            PQclear(held);
            if (!alive) {
                return false;
            }
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            continue;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            /* COPY cannot be driven through this API; the session is unusable after it. */
            PQclear(r);
            (void)connection_lost(c, "COPY is not supported");
            return false;
        }
        /* One result per statement is expected; if more arrive keep the first error. */
        if (c->held && PQresultStatus(c->held) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            PQclear(c->held);
            c->held = r;
        }
    }
    if (c->state == PGC_READY && PQstatus(c->pg) == CONNECTION_BAD) {
        c->broken = true;
    }
    return c->state == PGC_READY;
}

/* Hands every NOTIFY libpq has parsed to on_notify; false when the pgconn went away meanwhile. */
static bool deliver_notifies(pgconn *c)
{
    PGnotify *n;
    while (c->state == PGC_READY && !c->freeing && (n = PQnotifies(c->pg)) != NULL) {
        if (c->on_notify)
            c->on_notify(n->relname, n->extra, c->notify_arg);
        PQfreemem(n);
    }
    return c->state == PGC_READY && !c->freeing;
}

/* Runs one pass over the connected socket: send, flush, read, deliver. */
static void pump(pgconn *c, bool readable)
{
    if (readable && !c->broken && !PQconsumeInput(c->pg)) {
        c->broken = true;
    }
    /* Deliver what is buffered before looking at errors: those results are real. */
    if (!drain_results(c) || !deliver_notifies(c)) {
        return;
    }
    if (!c->broken) {
        send_unsent(c);
    }
    if (!c->broken) {
        flush_output(c);
    }
    /* Flushing may have read input while the socket was full; parse it now, EV_READ won't tell. */
    if (!c->broken && !drain_results(c)) {
        return;
    }
    if (c->broken) {
        char why[256];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(c->pg));
        why[strcspn(why, "\n")] = '\0';
        (void)connection_lost(c, why[0] ? why : "send failed");
    }
}

/* Connection established: switch to non-blocking pipeline mode and send what waited. */
static void connection_ready(pgconn *c)
{
    event_del(c->ev_timer);
    if (c->ev_conn) {
        event_free(c->ev_conn);
        c->ev_conn = NULL;
    }
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        log_pg_error("cannot enter pipeline mode", c->pg, c->backoff_ms);
        schedule_retry(c);
        return;
    }
    evutil_socket_t fd = PQsocket(c->pg);
    c->ev_read = event_new(c->base, fd, EV_READ | EV_PERSIST, on_io, c);
    c->ev_write = event_new(c->base, fd, EV_WRITE | EV_PERSIST, on_io, c);
    if (!c->ev_read || !c->ev_write) {
        log_warn("postgres: cannot create socket events");
        schedule_retry(c);
        return;
    }
    event_add(c->ev_read, NULL);
    c->state = PGC_READY;
    c->backoff_ms = PGCONN_BACKOFF_MIN_MS;
    c->connects++;
    c->unsent = c->head;
    log_info("postgres connected (backend pid %d, %zu queries waiting)", PQbackendPID(c->pg),
             c->count);
    if (c->on_state) {
        c->on_state(true, c->state_arg);
        if (c->freeing || c->state != PGC_READY) {
            return;
        }
    }
    pump(c, false);
}

/* Advances PQconnectPoll and waits on the socket for what it asks. */
static void connect_step(pgconn *c)
{
    PostgresPollingStatusType p = PQconnectPoll(c->pg);
    if (p == PGRES_POLLING_OK) {
        connection_ready(c);
        return;
    }
    if (p == PGRES_POLLING_FAILED) {
        log_pg_error("connect failed", c->pg, c->backoff_ms);
        schedule_retry(c);
        return;
    }
    /* The socket may differ between steps (multiple hosts, SSL retry), so re-create the event. */
    if (c->ev_conn) {
        event_free(c->ev_conn);
    }
    short what = p == PGRES_POLLING_READING ? EV_READ : EV_WRITE;
    c->ev_conn = event_new(c->base, PQsocket(c->pg), what, on_conn_io, c);
    if (!c->ev_conn) {
        log_warn("postgres: cannot create connect event");
        schedule_retry(c);
        return;
    }
    event_add(c->ev_conn, NULL);
}

/*
 * Works out once what each connection attempt asks for beyond the conninfo.
 *
 * The session's options: those the conninfo gives (or PGOPTIONS), then ours. Every statement is
 * planned for the tables as they are when it runs (plan_cache_mode=force_custom_plan): a
 * prepared statement's generic plan is made once per connection and kept until an ANALYZE of its
 * tables, so a plan made while a table was nearly empty (a new deployment) scanned it whole on
 * every execution as it grew to millions of rows (ADR 0028).
 *
 * A read-only session reports transaction_read_only=on wherever it runs, so the writable server
 * that target_session_attrs=read-write asks for (a multi-host conninfo, one of them a standby) is
 * asked of it as "primary" (in_hot_standby=off): the server it finds is the same.
 *
 * A conninfo that does not parse leaves the options NULL: the connection attempt says why.
 */
static void session_prepare(pgconn *c)
{
    free(c->options);
    c->options = NULL;
    c->primary = false;
    PQconninfoOption *opts = PQconninfoParse(c->conninfo, NULL);
    if (!opts)
        return;
    const char *given = getenv("PGOPTIONS");
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "options") == 0 && o->val)
            given = o->val;
        if (strcmp(o->keyword, "target_session_attrs") == 0 && o->val)
            c->primary = c->read_only && strcmp(o->val, "read-write") == 0;
    }
    c->options = xasprintf("%s%s-c plan_cache_mode=force_custom_plan%s", given ? given : "",
                           given && *given ? " " : "",
                           c->read_only ? " -c default_transaction_read_only=on" : "");
    PQconninfoFree(opts);
}

/* Starts one connection attempt. */
static void start_connect(pgconn *c)
{
    c->state = PGC_CONNECTING;
    if (c->options) {
        /* expand_dbname: the conninfo (string or URI) is read first, then what follows it
           overrides it. */
        const char *keys[5] = {"dbname", "options", NULL, NULL, NULL};
        const char *values[5] = {c->conninfo, c->options, NULL, NULL, NULL};
        int n = 2;
        if (c->primary) {
            keys[n] = "target_session_attrs";
            values[n++] = "primary";
        }
        if (c->name) {
            keys[n] = "fallback_application_name";
            values[n] = c->name;
        }
        c->pg = PQconnectStartParams(keys, values, 1);
    } else {
        c->pg = PQconnectStart(c->conninfo);
    }
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        log_pg_error("connect failed", c->pg, c->backoff_ms);
        schedule_retry(c);
        return;
    }
    PQsetNoticeReceiver(c->pg, notice_to_log, NULL);
    /* Per libpq, begin as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    set_timer(c, PGCONN_CONNECT_TIMEOUT_MS);
    c->ev_conn = event_new(c->base, PQsocket(c->pg), EV_WRITE, on_conn_io, c);
    if (!c->ev_conn) {
        log_warn("postgres: cannot create connect event");
        schedule_retry(c);
        return;
    }
    event_add(c->ev_conn, NULL);
}

static void destroy(pgconn *c)
{
    close_pg(c);
    free_prepared(c);
    event_free(c->ev_timer);
    event_free(c->ev_kick);
    free(c->conninfo);
    free(c->options);
    free(c->name);
    free(c);
}

/* Every libevent entry point brackets its work with enter/leave so a callback may free c. */
static void enter(pgconn *c)
{
    c->depth++;
}

static void leave(pgconn *c)
{
    if (--c->depth == 0 && c->freeing) {
        destroy(c);
    }
}

static void on_conn_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pgconn *c = arg;
    enter(c);
    connect_step(c);
    leave(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    pgconn *c = arg;
    enter(c);
    pump(c, (what & EV_READ) != 0);
    leave(c);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pgconn *c = arg;
    enter(c);
    if (c->state == PGC_READY) {
        pump(c, false);
    }
    leave(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pgconn *c = arg;
    enter(c);
    if (c->state == PGC_WAITING) {
        start_connect(c);
    } else if (c->state == PGC_CONNECTING) {
        log_warn("postgres connect timed out after %d ms", PGCONN_CONNECT_TIMEOUT_MS);
        schedule_retry(c);
    }
    leave(c);
}

pgconn *pgconn_new(struct event_base *base, const char *conninfo, pgconn_state_cb on_state,
                   void *arg, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        snprintf(err, errlen, "invalid PostgreSQL conninfo: %s", perr ? perr : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfreemem(perr);
        return NULL;
    }
    PQconninfoFree(opts);

    pgconn *c = xcalloc(1, sizeof(*c));
    c->down_since_us = ids_monotonic_us();
    c->base = base;
    c->conninfo = xstrdup(conninfo);
    session_prepare(c);
    c->on_state = on_state;
    c->state_arg = arg;
    c->max_pending = PGCONN_DEFAULT_MAX;
    c->prepared = strmap_new();
    c->backoff_ms = PGCONN_BACKOFF_MIN_MS;
    c->ev_timer = evtimer_new(base, on_timer, c);
    c->ev_kick = event_new(base, -1, 0, on_kick, c);
    if (!c->ev_timer || !c->ev_kick) {
        snprintf(err, errlen, "cannot create libevent events");
        destroy(c);
        return NULL;
    }
    /* Connect from the loop so on_state never fires before pgconn_new() returns. */
    c->state = PGC_WAITING;
    set_timer(c, 0);
    return c;
}

void pgconn_set_name(pgconn *c, const char *name)
{
    free(c->name);
    c->name = name ? xstrdup(name) : NULL;
}

void pgconn_free(pgconn *c)
{
    if (!c || c->freeing) {
        return;
    }
    c->freeing = true;
    close_pg(c);
    /* Drain even queries a callback adds (pgconn_query refuses them while freeing anyway). */
    while (c->head) {
        const pgconn_result r = {
            .status = PGCONN_DISCONNECTED, .res = NULL, .msg = "connection closed"};
        pgq *q = pop_head(c);
        q->cb(&r, q->arg);
        pgq_free(q);
    }
    if (c->depth == 0) {
        destroy(c);
    }
}

bool pgconn_connected(const pgconn *c)
{
    return c->state == PGC_READY && !c->freeing;
}

long long pgconn_down_since_us(const pgconn *c)
{
    return pgconn_connected(c) ? 0 : c->down_since_us;
}

size_t pgconn_pending(const pgconn *c)
{
    return c->count;
}

unsigned pgconn_connects(const pgconn *c)
{
    return c->connects;
}

void pgconn_set_max_pending(pgconn *c, size_t max)
{
    c->max_pending = max;
}

static int enqueue(pgconn *c, bool prepare, const char *sql, int nparams, const char *const *values,
                   pgconn_cb cb, void *arg)
{
    if (c->freeing || !sql || !cb || nparams < 0 || (nparams > 0 && !values) ||
        c->count >= c->max_pending) {
        return -1;
    }
    pgq *q = xcalloc(1, sizeof(*q));
    q->sql = xstrdup(sql);
    q->nparams = nparams;
    q->values = xcalloc(nparams > 0 ? (size_t)nparams : 1, sizeof(char *));
    for (int i = 0; i < nparams; i++) {
        q->values[i] = values[i] ? xstrdup(values[i]) : NULL;
    }
    q->cb = cb;
    q->arg = arg;
    q->prepare = prepare;
    if (c->tail) {
        c->tail->next = q;
    } else {
        c->head = q;
    }
    c->tail = q;
    if (!c->unsent) {
        c->unsent = q;
    }
    c->count++;
    /* Send from the loop, never from here: callbacks must not run inside pgconn_query(), and
     * queries queued in one loop iteration leave in one batch. */
    if (c->state == PGC_READY) {
        event_active(c->ev_kick, 0, 0);
    }
    return 0;
}

int pgconn_query(pgconn *c, const char *sql, int nparams, const char *const *values, pgconn_cb cb,
                 void *arg)
{
    return enqueue(c, false, sql, nparams, values, cb, arg);
}

int pgconn_query_prepared(pgconn *c, const char *sql, int nparams, const char *const *values,
                          pgconn_cb cb, void *arg)
{
    return enqueue(c, true, sql, nparams, values, cb, arg);
}

bool pgconn_cancel(pgconn *c, pgconn_cb cb, void *arg)
{
    if (c->freeing)
        return false;
    /* [head, unsent) are on the wire: only what follows may go. */
    pgq *prev = NULL;
    bool unsent = false;
    for (pgq *q = c->head; q; prev = q, q = q->next) {
        unsent = unsent || q == c->unsent;
        if (!unsent || q->cb != cb || q->arg != arg)
            continue;
        if (c->unsent == q)
            c->unsent = q->next;
        if (prev)
            prev->next = q->next;
        else
            c->head = q->next;
        if (c->tail == q)
            c->tail = prev;
        c->count--;
        pgq_free(q);
        return true;
    }
    return false;
}

pgconn_status pgconn_result_status(const pgconn_result *r)
{
    return r->status;
}

const char *pgconn_result_error(const pgconn_result *r)
{
    return r->status == PGCONN_OK ? "" : r->msg;
}

/* A diagnostic field of a server error, "" when absent. */
static const char *error_field(const pgconn_result *r, int field)
{
    const char *v = r->res ? PQresultErrorField(r->res, field) : NULL;
    return v ? v : "";
}

const char *pgconn_result_sqlstate(const pgconn_result *r)
{
    return error_field(r, PG_DIAG_SQLSTATE);
}

const char *pgconn_result_constraint(const pgconn_result *r)
{
    return error_field(r, PG_DIAG_CONSTRAINT_NAME);
}

int pgconn_result_ntuples(const pgconn_result *r)
{
    return r->status == PGCONN_OK ? PQntuples(r->res) : 0;
}

int pgconn_result_nfields(const pgconn_result *r)
{
    return r->status == PGCONN_OK ? PQnfields(r->res) : 0;
}

const char *pgconn_result_value(const pgconn_result *r, int row, int col)
{
    if (r->status != PGCONN_OK || row < 0 || col < 0 || row >= PQntuples(r->res) ||
        col >= PQnfields(r->res) || PQgetisnull(r->res, row, col)) {
        return NULL;
    }
    return PQgetvalue(r->res, row, col);
}

long long pgconn_result_affected(const pgconn_result *r)
{
    const char *n = r->res ? PQcmdTuples(r->res) : "";
    return *n ? strtoll(n, NULL, 10) : 0;
}

void pgconn_set_notify(pgconn *c, pgconn_notify_cb cb, void *arg)
{
    c->on_notify = cb;
    c->notify_arg = arg;
}

void pgconn_set_read_only(pgconn *c)
{
    c->read_only = true;
    session_prepare(c);
}

char *pgconn_int_array(const int *v, size_t n)
{
    size_t cap = 2 + n * 12, len = 0;
    char *s = xmalloc(cap + 1);
    s[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap + 1 - len, "%s%d", i ? "," : "", v[i]);
    s[len++] = '}';
    s[len] = '\0';
    return s;
}
