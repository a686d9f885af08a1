/* pgconn.h: one non-blocking, pipelined PostgreSQL connection driven by a libevent loop. */
#ifndef CQRS_PGCONN_H
#define CQRS_PGCONN_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

/*
 * Threading: a pgconn and its callbacks belong to the thread running its event_base.
 *
 * Queries are sent in libpq pipeline mode, each followed by its own sync point, so an error in one
 * query does not abort the others (inside an explicit BEGIN .. COMMIT the usual "current
 * transaction is aborted" rules still apply). Callbacks run in the order the queries were queued.
 *
 * Callbacks (query and state) may call pgconn_query() and pgconn_free(). After pgconn_free() the
 * callback must not touch the pgconn again; the memory is released once the callback returns.
 */
typedef struct pgconn pgconn;
/* One query's outcome; borrowed only until the callback returns. */
typedef struct pgconn_result pgconn_result;

typedef enum { PGCONN_OK = 0, PGCONN_ERROR, PGCONN_DISCONNECTED } pgconn_status;

/* Called exactly once per accepted query; res is borrowed until the callback returns. */
typedef void (*pgconn_cb)(const pgconn_result *res, void *arg);
/*
 * Called when the connection comes up (true) or an established connection is lost (false); not
 * called by pgconn_free(). On loss it runs before the failed queries' callbacks.
 */
typedef void (*pgconn_state_cb)(bool connected, void *arg);

/*
 * Creates the connection and starts connecting on base; reconnects forever with capped exponential
 * backoff (100 ms .. 5 s) while the server is down or after the connection is lost. Returns NULL
 * with err set only when conninfo does not parse. on_state may be NULL. base is borrowed and must
 * outlive the pgconn; caller frees with pgconn_free(). conninfo is copied. Notes: a host name in
 * conninfo is resolved synchronously by libpq (use hostaddr where that matters); a peer that
 * vanishes without closing is only noticed through TCP, so set keepalives_idle or
 * tcp_user_timeout in conninfo to bound that.
 */
pgconn *pgconn_new(struct event_base *base, const char *conninfo, pgconn_state_cb on_state,
                   void *arg, char *err, size_t errlen);
/*
 * Names the sessions for pg_stat_activity and the server's log: the application_name they take
 * unless the conninfo gives one (libpq's fallback_application_name). Takes effect from the next
 * connection attempt; call it right after pgconn_new() so that the first one has it. Copied.
 */
void pgconn_set_name(pgconn *c, const char *name);
/*
 * Closes and frees. Every queued and in-flight query's callback is called once with
 * PGCONN_DISCONNECTED before this returns; pgconn_query() made from those callbacks returns -1.
 * Allowed inside a pgconn callback (see above). NULL is a no-op.
 */
void pgconn_free(pgconn *c);
/* True while the connection is established and in pipeline mode. */
bool pgconn_connected(const pgconn *c);
/* ids_monotonic_us() when the session was lost, or first sought if it never was up; 0 while up. */
long long pgconn_down_since_us(const pgconn *c);
/* Number of queries queued or in flight whose callback has not run yet. */
size_t pgconn_pending(const pgconn *c);
/* Number of times the connection has been established since pgconn_new(). */
unsigned pgconn_connects(const pgconn *c);

/*
 * Queues one parameterised statement: text parameters $1..$nparams, a NULL entry is SQL NULL;
 * sql and values are copied, so the caller keeps ownership of them. sql must be a single
 * statement. cb is called exactly once: PGCONN_OK with the rows, PGCONN_ERROR with the server's
 * error, or PGCONN_DISCONNECTED when the connection drops before the result arrived (the query may
 * or may not have run; it is never resent). Queries queued while disconnected wait for the
 * connection. Returns 0, or -1 without calling cb when max_pending queries are already pending,
 * when the arguments are invalid, or while pgconn_free() is running.
 */
int pgconn_query(pgconn *c, const char *sql, int nparams, const char *const *values, pgconn_cb cb,
                 void *arg) __attribute__((warn_unused_result));
/*
 * As pgconn_query(), run as a prepared statement of the session: parsed and planned once per
 * session (the Parse goes out with the first execution), so use it for statements whose text is
 * fixed and that run often, not for text built per call. Each distinct text stays prepared until
 * the session ends. A Parse that fails (bad SQL, or an aborted transaction) is the error cb sees,
 * and the text is parsed again on its next use.
 */
int pgconn_query_prepared(pgconn *c, const char *sql, int nparams, const char *const *values,
                          pgconn_cb cb, void *arg) __attribute__((warn_unused_result));
/*
 * Withdraws the query queued with this cb and arg (the first such one) if it has not been sent
 * to the server yet: it is dropped and its callback never runs. Returns true when one was
 * withdrawn; false when none is waiting unsent (it was sent, or its callback already ran): a
 * sent query's callback still runs exactly once. Queries queued while the server is down stay
 * unsent until it is back, so this is how a caller gives up on one without it running later.
 * Not from inside pgconn_free().
 */
bool pgconn_cancel(pgconn *c, pgconn_cb cb, void *arg);

/*
 * Called for each notification (NOTIFY) received on a channel the connection LISTENs to; channel
 * and payload are borrowed until it returns. It may call pgconn_query() and pgconn_free().
 */
typedef void (*pgconn_notify_cb)(const char *channel, const char *payload, void *arg);

/*
 * Sets the notification callback (NULL: notifications are dropped). LISTEN itself is a query
 * like any other; a LISTEN does not survive a reconnection, so send it from on_state(true).
 * Notifications sent while the connection was down are lost: re-check what they would have told.
 */
void pgconn_set_notify(pgconn *c, pgconn_notify_cb cb, void *arg);

/*
 * Makes every session of c read-only (default_transaction_read_only=on, replacing any "options"
 * of the conninfo): PostgreSQL itself then refuses writes. Call right after pgconn_new(): it
 * applies from the first connection attempt, which starts from the event loop.
 */
void pgconn_set_read_only(pgconn *c);

/* Sets the bound on pgconn_pending() enforced by pgconn_query(); default 10000. */
void pgconn_set_max_pending(pgconn *c, size_t max);

/* Outcome of the query. */
pgconn_status pgconn_result_status(const pgconn_result *r);
/* The error's primary message; "" when none. Borrowed like r. */
const char *pgconn_result_error(const pgconn_result *r);
/* The SQLSTATE of a server error, e.g. "40001"; "" when none. Borrowed like r. */
const char *pgconn_result_sqlstate(const pgconn_result *r);
/* The violated constraint's name for integrity errors (e.g. 23505); "" when none. */
const char *pgconn_result_constraint(const pgconn_result *r);
/* Number of rows returned; 0 unless PGCONN_OK. */
int pgconn_result_ntuples(const pgconn_result *r);
/* Number of columns returned; 0 unless PGCONN_OK. */
int pgconn_result_nfields(const pgconn_result *r);
/* Text value at row, col; NULL when SQL NULL or out of range. Borrowed like r. */
const char *pgconn_result_value(const pgconn_result *r, int row, int col);
/* Rows affected by INSERT/UPDATE/DELETE/SELECT etc. (PQcmdTuples); 0 when none. */
long long pgconn_result_affected(const pgconn_result *r);

/* v as a PostgreSQL int[] literal ("{1,2}"), a query parameter; the caller frees it. */
char *pgconn_int_array(const int *v, size_t n);

#endif
