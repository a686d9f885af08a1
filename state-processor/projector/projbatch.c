/* projbatch.c: decode events, collapse them to the newest version per row, rows to write. */
#include "projector/projbatch.h"

#include "core/rfc3339.h"
#include "core/strmap.h"
#include "core/utf8.h"
#include "core/xalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* True when the bytes are UTF-8 text without NUL: what jsonb and text columns can hold. */
static bool is_text(const char *s, size_t len)
{
    return !memchr(s, '\0', len) && utf8_valid(s, len, false);
}

/* A copy of s (len bytes) that PostgreSQL takes as text: other bytes become '?'. */
static char *text_copy(const char *s, size_t len)
{
    char *out = xstrndup(s, len);
    if (is_text(out, len))
        return out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c == 0 || c >= 0x80)
            out[i] = '?';
    }
    return out;
}

/*
 * An RFC 3339 date-time that PostgreSQL's timestamptz also reads: RFC 3339 allows year 0000 and
 * offsets up to 23:59, PostgreSQL neither.
 */
static bool pg_time_ok(const char *s)
{
    size_t len = strlen(s);
    if (!rfc3339_date_time_valid(s, len) || strncmp(s, "0000", 4) == 0)
        return false;
    char last = s[len - 1];
    if (last == 'Z' || last == 'z')
        return true;
    /* The offset is the last six characters, "+HH:MM". */
    return (s[len - 5] - '0') * 10 + (s[len - 4] - '0') <= 15;
}

/* Details may quote the message (a parser's error, a header): keep them storable as text. */
static void skip(projbatch_item *it, const char *reason, const char *detail)
{
    free(it->skip_reason);
    free(it->skip_detail);
    it->skip_reason = text_copy(reason, strlen(reason));
    it->skip_detail = text_copy(detail, strlen(detail));
    it->proj = NULL;
}

static const char *member_string(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);
    return json_is_string(v) && json_string_length(v) > 0 ? json_string_value(v) : NULL;
}

/* Everything but the copy of the raw message. */
static void decode_event(projbatch_item *it, const domain_registry *reg, const char *default_tenant)
{
    envelope env = {0};
    char err[256];
    if (envelope_from_headers(&env, it->headers, it->nheaders, err, sizeof(err)) != 0) {
        skip(it, DLQ_BAD_ENVELOPE, err);
        goto out;
    }
    const char *tenant = env.tenant && *env.tenant ? env.tenant : default_tenant;
    if (!is_text(tenant, strlen(tenant))) {
        skip(it, DLQ_BAD_ENVELOPE, "header ce_tenant: not UTF-8 text");
        goto out;
    }
    json_error_t jerr;
    json_t *v = it->value ? json_loadb(it->value, it->len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(v)) {
        skip(it, "malformed-value", v || !it->value ? "the value is not a JSON object" : jerr.text);
        json_decref(v);
        goto out;
    }
    const char *type = member_string(v, "aggregate_type");
    const char *id = member_string(v, "aggregate_id");
    const json_t *version = json_object_get(v, "version");
    const json_t *state = json_object_get(v, "state");
    if (!type || !id) {
        skip(it, "malformed-value", "aggregate_type and aggregate_id must be non-empty strings");
    } else if (!(it->proj = domain_registry_projection(reg, type))) {
        skip(it, "unknown-aggregate", type);
    } else if (!json_is_integer(version) || json_integer_value(version) < 1) {
        skip(it, "bad-version", "version must be an integer of at least 1");
    } else if (!json_is_object(state) && !json_is_null(state)) {
        skip(it, "malformed-value", "state must be an object, or null once deleted");
    } else if (env.subject && strcmp(env.subject, id) != 0) {
        skip(it, "inconsistent-event", "ce_subject differs from aggregate_id");
    } else {
        /* The event id names what the event is about: a mismatch means a corrupt event. */
        char *event_id = envelope_event_id(tenant, type, id, json_integer_value(version));
        if (strcmp(event_id, env.id) != 0) {
            skip(it, "inconsistent-event", "ce_id is not <tenant>/<type>/<id>/<version>");
        } else {
            it->tenant = xstrdup(tenant);
            it->id = xstrdup(id);
            it->version = json_integer_value(version);
            it->state = json_is_object(state) ? json_incref((json_t *)state) : NULL;
            it->time = env.time && pg_time_ok(env.time) ? xstrdup(env.time) : NULL;
        }
        free(event_id);
    }
    json_decref(v);
out:
    envelope_clear(&env);
}

static void copy_message(projbatch_item *it, const kafka_message *m)
{
    it->partition = m->partition;
    it->offset = m->offset;
    it->key = m->key ? xstrndup(m->key, m->key_len) : NULL;
    it->key_len = m->key ? m->key_len : 0;
    it->value = m->value ? xstrndup(m->value, m->len) : NULL;
    it->len = m->value ? m->len : 0;
    it->headers = xcalloc(m->nheaders + 1, sizeof(header));
    for (size_t i = 0; i < m->nheaders; i++) {
        it->headers[i].name = xstrdup(m->headers[i].name);
        /* A header without a value stays NULL: envelope_from_headers() skips those. */
        it->headers[i].value =
            m->headers[i].value ? xstrndup(m->headers[i].value, m->headers[i].len) : NULL;
        it->headers[i].len = m->headers[i].len;
    }
    it->nheaders = m->nheaders;
}

void projbatch_decode(projbatch *b, const domain_registry *reg, const kafka_message *msgs, size_t n,
                      const char *default_tenant)
{
    b->items = xcalloc(n ? n : 1, sizeof(projbatch_item));
    b->n = n;
    b->topic = xstrdup(n ? msgs[0].topic : "");
    b->from = 0;
    b->to = n;
    for (size_t i = 0; i < n; i++) {
        copy_message(&b->items[i], &msgs[i]);
        decode_event(&b->items[i], reg, default_tenant);
    }
}

void projbatch_clear(projbatch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        projbatch_item *it = &b->items[i];
        for (size_t h = 0; h < it->nheaders; h++) {
            free((char *)(uintptr_t)it->headers[h].name);
            free((char *)(uintptr_t)it->headers[h].value);
        }
        free(it->headers);
        free(it->key), free(it->value);
        free(it->tenant), free(it->id), free(it->time);
        json_decref(it->state);
        free(it->skip_reason), free(it->skip_detail);
    }
    free(b->items);
    free(b->topic);
    memset(b, 0, sizeof(*b));
}

void projbatch_skip(projbatch *b, size_t i, const char *reason, const char *detail)
{
    if (i >= b->n)
        return;
    skip(&b->items[i], reason, detail);
}

size_t projbatch_count(const projbatch *b, const projection *p)
{
    size_t n = 0;
    for (size_t i = b->from; i < b->to; i++)
        n += !b->items[i].skip_reason && (!p || b->items[i].proj == p);
    return n;
}

size_t projbatch_skipped(const projbatch *b)
{
    size_t n = 0;
    for (size_t i = b->from; i < b->to; i++)
        n += b->items[i].skip_reason != NULL;
    return n;
}

static char *dump_free(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) /* out of memory: a NULL parameter would project nothing and move the offsets */
        abort();
    return s;
}

static json_t *row_of(const projbatch_item *it)
{
    const projection *p = it->proj;
    json_t *row = json_pack("{s:s, s:s, s:I, s:O, s:b}", "tenant", it->tenant, "id", it->id,
                            "version", (json_int_t)it->version, "state",
                            it->state ? it->state : json_null(), "deleted", it->state == NULL);
    json_object_set_new(row, "updated_at", it->time ? json_string(it->time) : json_null());
    for (size_t c = 0; c < p->ncols; c++) {
        /* Deleted rows keep no declared values: projection_value() of no state is NULL. */
        char *v = projection_value(&p->cols[c], it->state);
        if (v && p->cols[c].type == PROJECTION_TIMESTAMPTZ && !pg_time_ok(v)) {
            free(v); /* a date-time PostgreSQL cannot store is an unusable value: NULL */
            v = NULL;
        }
        json_object_set_new(row, p->cols[c].name, v ? json_string(v) : json_null());
        free(v);
    }
    return row;
}

char *projbatch_rows(const projbatch *b, const projection *p, size_t *count)
{
    /* One row per (tenant, id): a statement may not change the same row twice. The newest
       version wins, which is what applying them in turn under the version guard would leave. */
    strmap *newest = strmap_new();
    size_t nkeys = 0;
    const projbatch_item **order = xcalloc(b->to - b->from + 1, sizeof(*order));
    for (size_t i = b->from; i < b->to; i++) {
        const projbatch_item *it = &b->items[i];
        if (it->skip_reason || it->proj != p)
            continue;
        char *k = xasprintf("%s\x1f%s", it->tenant, it->id);
        const projbatch_item **slot = strmap_get(newest, k);
        if (!slot) {
            order[nkeys] = it;
            strmap_put(newest, k, &order[nkeys]);
            nkeys++;
        } else if (it->version > (*slot)->version) {
            *slot = it;
        }
        free(k);
    }
    json_t *rows = json_array();
    for (size_t i = 0; i < nkeys; i++)
        json_array_append_new(rows, row_of(order[i]));
    strmap_free(newest);
    free(order);
    *count = nkeys;
    return dump_free(rows);
}

static json_t *hex_of(const char *s, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *hex = xmalloc(2 * len + 1);
    for (size_t i = 0; i < len; i++) {
        hex[2 * i] = digits[(unsigned char)s[i] >> 4];
        hex[2 * i + 1] = digits[(unsigned char)s[i] & 15];
    }
    hex[2 * len] = '\0';
    json_t *j = json_string(hex);
    free(hex);
    return j;
}

/* Sets o[name] to the bytes as a string, or o[name_hex] to their hex when they are not text. */
static void set_text_or_hex(json_t *o, const char *name, const char *s, size_t len)
{
    if (is_text(s, len)) {
        json_object_set_new(o, name, json_stringn(s, len));
    } else {
        char key[32];
        snprintf(key, sizeof(key), "%s_hex", name);
        json_object_set_new(o, key, hex_of(s, len));
    }
}

char *projbatch_skipped_rows(const projbatch *b, const char *group, size_t *count)
{
    json_t *rows = json_array();
    for (size_t i = b->from; i < b->to; i++) {
        const projbatch_item *it = &b->items[i];
        if (!it->skip_reason)
            continue;
        json_t *headers = json_array();
        for (size_t h = 0; h < it->nheaders; h++) {
            json_t *o = json_object();
            set_text_or_hex(o, "name", it->headers[h].name, strlen(it->headers[h].name));
            if (it->headers[h].value)
                set_text_or_hex(o, "value", it->headers[h].value, it->headers[h].len);
            else
                json_object_set_new(o, "value", json_null());
            json_array_append_new(headers, o);
        }
        json_array_append_new(
            rows,
            json_pack("{s:s, s:s, s:i, s:I, s:s, s:s, s:o, s:o, s:o}", "group_id", group, "topic",
                      b->topic, "partition", it->partition, "kafka_offset", (json_int_t)it->offset,
                      "reason", it->skip_reason, "detail", it->skip_detail, "key_hex",
                      it->key ? hex_of(it->key, it->key_len) : json_null(), "headers", headers,
                      "value_hex", it->value ? hex_of(it->value, it->len) : json_null()));
    }
    *count = json_array_size(rows);
    return dump_free(rows);
}

size_t projbatch_positions(const projbatch *b, int *partitions, long long *next)
{
    size_t n = 0;
    for (size_t i = b->from; i < b->to; i++) {
        const projbatch_item *it = &b->items[i];
        size_t k = 0;
        while (k < n && partitions[k] != it->partition)
            k++;
        if (k == n) {
            partitions[n] = it->partition;
            next[n++] = it->offset + 1;
        } else if (it->offset + 1 > next[k]) {
            next[k] = it->offset + 1;
        }
    }
    return n;
}

char *projbatch_offset_rows(const projbatch *b, const char *group, size_t *count)
{
    int *parts = xcalloc(b->n + 1, sizeof(int));
    long long *next = xcalloc(b->n + 1, sizeof(long long));
    size_t n = projbatch_positions(b, parts, next);
    json_t *rows = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(rows, json_pack("{s:s, s:s, s:i, s:I}", "group_id", group, "topic",
                                              b->topic, "partition", parts[i], "next_offset",
                                              (json_int_t)next[i]));
    free(parts);
    free(next);
    *count = n;
    return dump_free(rows);
}
