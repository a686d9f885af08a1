/* readwait.c: a LISTEN connection and the reads waiting on it, keyed by projection row. */
#include "readwait.h"

#include "core/log.h"
#include "pg/pgconn.h"
#include "core/strmap.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct readwait_entry {
    readwait *w;
    char *key;
    long long min_version;
    readwait_cb cb;
    void *arg;
    struct event *deadline;
    readwait_entry *prev, *next; /* entries of the same key */
};

struct readwait {
    struct event_base *base;
    pgconn *pg;
    bool listening;
    strmap *waiting; /* key -> readwait_entry * (head of the list) */
};

/* "tenant\x1ftype\x1fid": the unit separator cannot appear in a key the API accepts. */
static char *row_key(const char *tenant, const char *type, const char *id)
{
    return xasprintf("%s\x1f%s\x1f%s", tenant, type, id);
}

static void unlink_entry(readwait_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else if (e->next)
        strmap_put(e->w->waiting, e->key, e->next);
    else
        strmap_remove(e->w->waiting, e->key);
    if (e->next)
        e->next->prev = e->prev;
}

static void entry_free(readwait_entry *e)
{
    event_free(e->deadline);
    free(e->key);
    free(e);
}

void readwait_cancel(readwait_entry *e)
{
    if (!e)
        return;
    unlink_entry(e);
    entry_free(e);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    readwait_entry *e = arg;
    unlink_entry(e);
    e->cb(READWAIT_TIMEOUT, e->arg);
    entry_free(e);
}

/*
 * Calls cb for every entry of key (NULL: of every key) whose min_version is reached by version
 * (-1: any). Callbacks may cancel their own entry, so the next one is taken first; they may
 * not cancel others.
 */
static void wake(readwait *w, const char *key, long long version, readwait_event ev)
{
    for (readwait_entry *e = strmap_get(w->waiting, key), *next; e; e = next) {
        next = e->next;
        if (version < 0 || version >= e->min_version)
            e->cb(ev, e->arg);
    }
}

static void collect_keys(const char *key, void *value, void *arg)
{
    (void)value;
    json_array_append_new(arg, json_string(key));
}

static void on_notify(const char *channel, const char *payload, void *arg)
{
    readwait *w = arg;
    if (strcmp(channel, READWAIT_CHANNEL) != 0)
        return;
    json_t *j = json_loads(payload, 0, NULL);
    const char *tenant = json_string_value(json_object_get(j, "tenant"));
    const char *type = json_string_value(json_object_get(j, "aggregate_type"));
    const char *id = json_string_value(json_object_get(j, "aggregate_id"));
    json_t *version = json_object_get(j, "version");
    if (tenant && type && id && json_is_integer(version)) {
        char *key = row_key(tenant, type, id);
        wake(w, key, json_integer_value(version), READWAIT_REACHED);
        free(key);
    } else {
        log_kv(LOG_WARN, "readwait: notification not understood", LOG_FIELDS("payload", payload));
    }
    json_decref(j);
}

static void on_listen(const pgconn_result *res, void *arg)
{
    readwait *w = arg;
    if (pgconn_result_status(res) != PGCONN_OK) {
        log_kv(LOG_WARN, "readwait: LISTEN failed", LOG_FIELDS("error", pgconn_result_error(res)));
        return;
    }
    w->listening = true;
    /* Whatever was committed while nobody listened is found by reading again. */
    json_t *keys = json_array();
    strmap_each(w->waiting, collect_keys, keys);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        wake(w, json_string_value(k), -1, READWAIT_RECHECK);
    }
    json_decref(keys);
}

static void on_state(bool connected, void *arg)
{
    readwait *w = arg;
    w->listening = false;
    if (connected && pgconn_query(w->pg, "LISTEN " READWAIT_CHANNEL, 0, NULL, on_listen, w) != 0)
        log_kv(LOG_WARN, "readwait: cannot queue LISTEN", NULL);
}

readwait *readwait_new(struct event_base *base, const char *conninfo, char *err, size_t errlen)
{
    readwait *w = xcalloc(1, sizeof *w);
    w->base = base;
    w->waiting = strmap_new();
    w->pg = pgconn_new(base, conninfo, on_state, w, err, errlen);
    if (!w->pg) {
        strmap_free(w->waiting);
        free(w);
        return NULL;
    }
    pgconn_set_name(w->pg, "command-gateway listen");
    pgconn_set_notify(w->pg, on_notify, w);
    return w;
}

static void drop_list(const char *key, void *value, void *arg)
{
    (void)key, (void)arg;
    for (readwait_entry *e = value, *next; e; e = next) {
        next = e->next;
        entry_free(e);
    }
}

void readwait_free(readwait *w)
{
    if (!w)
        return;
    pgconn_free(w->pg);
    strmap_each(w->waiting, drop_list, NULL);
    strmap_free(w->waiting);
    free(w);
}

bool readwait_listening(const readwait *w)
{
    return w->listening;
}

readwait_entry *readwait_add(readwait *w, const char *tenant, const char *type, const char *id,
                             long long min_version, long long timeout_ms, readwait_cb cb, void *arg)
{
    readwait_entry *e = xcalloc(1, sizeof *e);
    e->w = w;
    e->key = row_key(tenant, type, id);
    e->min_version = min_version;
    e->cb = cb;
    e->arg = arg;
    e->deadline = evtimer_new(w->base, on_deadline, e);
    if (!e->deadline)
        xoom(sizeof(struct event *));
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(e->deadline, &tv);
    e->next = strmap_get(w->waiting, e->key);
    if (e->next)
        e->next->prev = e;
    strmap_put(w->waiting, e->key, e);
    return e;
}
