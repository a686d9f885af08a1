/* batch.c: decode, dedupe, version checks and rule application for one batch of commands. */
#include "processor/batch.h"

#include "core/ids.h"
#include "core/jsontext.h"
#include "pg/pgconn.h"
#include "http/problem.h"
#include "processor/relay.h"
#include "core/xalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An aggregate as loaded from PostgreSQL and as changed by the batch so far. */
typedef struct agg_row {
    char *tenant, *type, *id;
    long long loaded_version; /* 0: no row */
    long long version;
    json_t *state;          /* NULL when absent or deleted */
    const char *state_text; /* its encoding, by the item that made it (NULL: not made here) */
    bool deleted;
    bool dirty;
} agg_row;

/* A command already decided, known by its tenant + idempotency key or by its id. */
typedef struct known_cmd {
    char *id;
    char *status;
    int http_status;
    json_t *result;
} known_cmd;

/* "a<US>b<US>c", or "a<US>b" when c is NULL: a map key (caller frees). */
static char *join3(const char *a, const char *b, const char *c)
{
    const char *parts[3] = {a, b, c};
    size_t lens[3] = {strlen(a), strlen(b), c ? strlen(c) : 0};
    char *key = xmalloc(lens[0] + lens[1] + lens[2] + 3);
    char *at = key;
    for (int i = 0; i < 3 && parts[i]; i++) {
        if (i)
            *at++ = '\x1f';
        memcpy(at, parts[i], lens[i]);
        at += lens[i];
    }
    *at = '\0';
    return key;
}

static void dead(batch_item *it, const char *reason, const char *detail)
{
    it->dead_reason = xstrdup(reason);
    it->dead_detail = xstrdup(detail);
}

/* Copies n bytes and a NUL to *at, which moves past them; returns where they begin. */
static const char *copy_out(char **at, const char *src, size_t n)
{
    char *dst = *at;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
    *at += n + 1;
    return dst;
}

/* Copies the message's key, value and headers into one allocation (it->raw). */
static void copy_raw(batch_item *it, const kafka_message *m)
{
    size_t vlen = m->value ? m->len : 0;
    size_t size = (m->nheaders + 1) * sizeof(header) + (m->key ? m->key_len + 1 : 0) + vlen + 1;
    for (size_t i = 0; i < m->nheaders; i++)
        size += strlen(m->headers[i].name) + 1 + m->headers[i].len + 1;
    header *h = it->raw = xmalloc(size);
    char *at = (char *)(h + m->nheaders + 1);
    for (size_t i = 0; i < m->nheaders; i++) {
        h[i].name = copy_out(&at, m->headers[i].name, strlen(m->headers[i].name));
        h[i].len = m->headers[i].value ? m->headers[i].len : 0;
        h[i].value = copy_out(&at, m->headers[i].value, h[i].len);
    }
    h[m->nheaders] = (header){0};
    it->headers = h;
    it->nheaders = m->nheaders;
    it->key = m->key ? copy_out(&at, m->key, m->key_len) : NULL;
    it->key_len = m->key ? m->key_len : 0;
    it->value = copy_out(&at, m->value, vlen);
    it->len = vlen;
}

static void decode_one(batch_item *it, const domain_registry *reg, const kafka_message *m,
                       const char *default_tenant)
{
    it->partition = m->partition;
    it->offset = m->offset;
    copy_raw(it, m);
    it->env.expected_version = -1;
    it->env.reply_partition = -1;

    char err[256];
    if (envelope_from_headers(&it->env, it->headers, it->nheaders, err, sizeof(err)) != 0) {
        dead(it, DLQ_BAD_ENVELOPE, err);
        return;
    }
    /* Trace context that does not parse is dropped, tracestate with it (W3C Trace Context). */
    if (!trace_parent_valid(it->env.traceparent)) {
        free(it->env.traceparent);
        it->env.traceparent = NULL;
    }
    if (!it->env.traceparent || !trace_state_valid(it->env.tracestate)) {
        free(it->env.tracestate);
        it->env.tracestate = NULL;
    }
    trace_child(it->env.traceparent, it->traceparent);
    trace_id_of(it->traceparent, it->trace_id);
    if (!ids_is_uuid(it->env.id)) {
        dead(it, DLQ_BAD_ENVELOPE, "ce_id is not a UUID");
        return;
    }
    if (!it->env.subject || !*it->env.subject) {
        dead(it, DLQ_BAD_ENVELOPE, "ce_subject (the aggregate id) is missing");
        return;
    }
    /* Any producer may have written it: what is recorded must fit the tables and their keys. */
    if (envelope_check_command(&it->env, err, sizeof(err)) != 0) {
        dead(it, DLQ_BAD_ENVELOPE, err);
        return;
    }
    it->tenant = it->env.tenant && *it->env.tenant ? it->env.tenant : default_tenant;
    it->idem_key =
        it->env.idempotency_key && *it->env.idempotency_key ? it->env.idempotency_key : it->env.id;
    it->recordable = true;
    it->cmd = domain_registry_find(reg, it->env.type);
    if (!it->cmd) {
        dead(it, DLQ_UNKNOWN_COMMAND, it->env.type);
        return;
    }
    it->payload = json_loadb(it->value, it->len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(it->payload)) {
        dead(it, DLQ_MALFORMED_PAYLOAD, "the message value is not a JSON object");
        return;
    }
    json_t *errors = json_array();
    if (!domain_command_validate(it->cmd, it->payload, errors)) {
        char *text = json_dumps(errors, JSON_COMPACT);
        dead(it, DLQ_INVALID_PAYLOAD, text);
        free(text);
    }
    json_decref(errors);
}

static size_t partition_index(const batch *b, int partition)
{
    for (size_t i = 0; i < b->npartitions; i++) {
        if (b->partitions[i] == partition)
            return i;
    }
    return b->npartitions;
}

/* Sets the range [from, to) and the next offset it reaches on each partition. */
static void set_range(batch *b, size_t from, size_t to)
{
    b->from = from;
    b->to = to;
    b->refusals = 0;
    for (size_t p = 0; p < b->npartitions; p++)
        b->batch_next[p] = -1;
    for (size_t i = from; i < to; i++) {
        size_t p = partition_index(b, b->items[i].partition);
        if (b->items[i].offset + 1 > b->batch_next[p])
            b->batch_next[p] = b->items[i].offset + 1;
    }
}

void batch_decode(batch *b, const domain_registry *reg, const kafka_message *msgs, size_t n,
                  const char *group, const char *default_tenant)
{
    b->items = xcalloc(n ? n : 1, sizeof(batch_item));
    b->n = n;
    b->group = group;
    b->topic = n ? xstrdup(msgs[0].topic) : xstrdup("");
    b->partitions = xcalloc(n ? n : 1, sizeof(int));
    b->stored_next = xcalloc(n ? n : 1, sizeof(long long));
    b->batch_next = xcalloc(n ? n : 1, sizeof(long long));
    for (size_t i = 0; i < n; i++) {
        decode_one(&b->items[i], reg, &msgs[i], default_tenant);
        if (partition_index(b, msgs[i].partition) == b->npartitions)
            b->partitions[b->npartitions++] = msgs[i].partition;
    }
    set_range(b, 0, n);
    batch_reset(b);
}

/*
 * A unique violation is most often a race lost: the commands table has two unique keys, the id
 * and (tenant, idempotency key), and an INSERT's ON CONFLICT takes one arbiter. A gateway's record
 * of the same command (an optimistic request's, ADR 0041) or another processor's write that
 * commits while this transaction writes fails the whole range on the other key. Written again,
 * the range sees that row committed and takes its ON CONFLICT path: one more transaction, where
 * halving down to the command would take several.
 */
batch_refusal batch_refused(batch *b, const char *reason, const char *detail, bool unique)
{
    if (unique && b->to - b->from > 1 && b->refusals++ == 0)
        return BATCH_RETRIED;
    if (b->to - b->from > 1) {
        set_range(b, b->from, b->from + (b->to - b->from) / 2);
        return BATCH_NARROWED;
    }
    if (b->from == b->to)
        return BATCH_STUCK;
    batch_item *it = &b->items[b->from];
    /* Nothing of its own was written: the refusal was not about it. */
    if (it->state == ITEM_SKIPPED || it->state == ITEM_DUPLICATE)
        return BATCH_STUCK;
    if (!it->dead_reason && b->refusals++ == 0)
        return BATCH_RETRY_ALONE;
    if (!it->dead_reason) {
        dead(it, reason, detail);
        it->dead_sent = false;
        return BATCH_DEAD_LETTERED;
    }
    if (it->recordable) {
        it->recordable = false;
        return BATCH_UNRECORDED;
    }
    return BATCH_STUCK;
}

bool batch_next_range(batch *b)
{
    if (b->to >= b->n)
        return false;
    set_range(b, b->to, b->n);
    return true;
}

static void free_agg(const char *key, void *value, void *arg)
{
    (void)key, (void)arg;
    agg_row *a = value;
    free(a->tenant), free(a->type), free(a->id);
    json_decref(a->state);
    free(a);
}

static void free_known(const char *key, void *value, void *arg)
{
    (void)key, (void)arg;
    known_cmd *k = value;
    free(k->id), free(k->status);
    json_decref(k->result);
    free(k);
}

static void reset_outcomes(batch_item *it)
{
    it->state = ITEM_NEW;
    it->http_status = 0;
    json_decref(it->body);
    it->body = NULL;
    it->version = 0;
    free(it->event_id);
    it->event_id = NULL;
    free(it->state_text), free(it->body_text), free(it->event_text);
    it->state_text = it->body_text = it->event_text = NULL;
}

void batch_reset(batch *b)
{
    if (b->aggregates) {
        strmap_each(b->aggregates, free_agg, NULL);
        strmap_free(b->aggregates);
    }
    if (b->known) {
        strmap_each(b->known, free_known, NULL);
        strmap_free(b->known);
    }
    b->aggregates = strmap_new();
    b->known = strmap_new();
    for (size_t i = 0; i < b->npartitions; i++)
        b->stored_next[i] = -1;
    for (size_t i = 0; i < b->n; i++)
        reset_outcomes(&b->items[i]);
}

void batch_clear(batch *b)
{
    batch_reset(b);
    strmap_free(b->aggregates);
    strmap_free(b->known);
    for (size_t i = 0; i < b->n; i++) {
        batch_item *it = &b->items[i];
        reset_outcomes(it);
        free(it->raw);
        envelope_clear(&it->env);
        json_decref(it->payload);
        free(it->dead_reason), free(it->dead_detail);
    }
    free(b->items);
    free((char *)(uintptr_t)b->topic);
    free(b->partitions), free(b->stored_next), free(b->batch_next);
    memset(b, 0, sizeof(*b));
}

char *batch_partitions_param(const batch *b)
{
    return pgconn_int_array(b->partitions, b->npartitions);
}

/* Opens an array of rows in t. */
static void rows_open(jsontext *t)
{
    JSONTEXT_LIT(t, "[");
}

/* Starts row number n (from 0) of the array in t with its first member name. */
static void row_start(jsontext *t, size_t *n, const char *first)
{
    if ((*n)++ > 0)
        JSONTEXT_LIT(t, ",");
    JSONTEXT_LIT(t, "{\"");
    jsontext_raw(t, first, strlen(first));
    JSONTEXT_LIT(t, "\":");
}

/* Appends ,"name": to the row being written. */
static void member(jsontext *t, const char *name)
{
    JSONTEXT_LIT(t, ",\"");
    jsontext_raw(t, name, strlen(name));
    JSONTEXT_LIT(t, "\":");
}

/* Closes the array of n rows in t: its text, or NULL when a value could not be encoded. */
static char *rows_close(jsontext *t, size_t n, size_t *count)
{
    JSONTEXT_LIT(t, "]");
    if (count)
        *count = n;
    return jsontext_finish(t, NULL);
}

char *batch_keys_param(const batch *b)
{
    jsontext t = {0};
    size_t n = 0;
    rows_open(&t);
    for (size_t i = b->from; i < b->to; i++) {
        const batch_item *it = &b->items[i];
        if (!it->recordable)
            continue;
        row_start(&t, &n, "tenant");
        jsontext_str(&t, it->tenant);
        member(&t, "key");
        jsontext_str(&t, it->idem_key);
        member(&t, "id");
        jsontext_str(&t, it->env.id);
        JSONTEXT_LIT(&t, "}");
    }
    return rows_close(&t, n, NULL);
}

char *batch_aggregates_param(const batch *b)
{
    jsontext t = {0};
    size_t n = 0;
    rows_open(&t);
    for (size_t i = b->from; i < b->to; i++) {
        const batch_item *it = &b->items[i];
        if (!it->cmd || it->dead_reason)
            continue;
        row_start(&t, &n, "tenant");
        jsontext_str(&t, it->tenant);
        member(&t, "type");
        jsontext_str(&t, domain_command_aggregate(it->cmd));
        member(&t, "id");
        jsontext_str(&t, it->env.subject);
        JSONTEXT_LIT(&t, "}");
    }
    return rows_close(&t, n, NULL);
}

void batch_load_offset(batch *b, int partition, long long next_offset)
{
    size_t p = partition_index(b, partition);
    if (p < b->npartitions)
        b->stored_next[p] = next_offset;
}

/*
 * Records a decided command under both of its identities: "k<US>tenant<US>key" and "i<US>id".
 * Each map entry owns its own copy. result is borrowed.
 */
static void remember(batch *b, const char *tenant, const char *key, const char *id,
                     const char *status, int http_status, json_t *result)
{
    char *mks[2] = {join3("k", tenant, key), join3("i", id, NULL)};
    for (int i = 0; i < 2; i++) {
        known_cmd *k = xcalloc(1, sizeof(*k));
        k->id = xstrdup(id);
        k->status = xstrdup(status);
        k->http_status = http_status;
        k->result = result ? json_incref(result) : NULL;
        known_cmd *old = strmap_put(b->known, mks[i], k);
        if (old)
            free_known(NULL, old, NULL);
        free(mks[i]);
    }
}

void batch_load_command(batch *b, const char *tenant, const char *key, const char *id,
                        const char *status, int http_status, const char *result)
{
    json_t *r = result ? json_loads(result, 0, NULL) : NULL;
    remember(b, tenant, key, id, status, http_status, r);
    json_decref(r);
}

/* A record that is not a decision: accepted, or accepted so long ago that it was marked
   abandoned (its command may still arrive, and is then applied: ADR 0020). */
static bool undecided(const known_cmd *k)
{
    return strcmp(k->status, "accepted") == 0 || strcmp(k->status, "abandoned") == 0;
}

/*
 * The earlier decision this item repeats, or NULL: the same tenant + idempotency key, or the same
 * command id (a producer retry). An undecided record under this very id is not a decision.
 */
static const known_cmd *earlier(const batch *b, const batch_item *it)
{
    char *mks[2] = {join3("k", it->tenant, it->idem_key), join3("i", it->env.id, NULL)};
    const known_cmd *found = NULL;
    for (int i = 0; i < 2 && !found; i++) {
        const known_cmd *k = strmap_get(b->known, mks[i]);
        if (k && (!undecided(k) || strcmp(k->id, it->env.id) != 0))
            found = k;
    }
    free(mks[0]);
    free(mks[1]);
    return found;
}

static agg_row *agg_get(batch *b, const char *tenant, const char *type, const char *id)
{
    char *k = join3(tenant, type, id);
    agg_row *a = strmap_get(b->aggregates, k);
    if (!a) {
        a = xcalloc(1, sizeof(*a));
        a->tenant = xstrdup(tenant);
        a->type = xstrdup(type);
        a->id = xstrdup(id);
        strmap_put(b->aggregates, k, a);
    }
    free(k);
    return a;
}

int batch_load_aggregate(batch *b, const char *tenant, const char *type, const char *id,
                         long long version, const char *state, bool deleted)
{
    json_t *s = NULL;
    if (state && !deleted) {
        s = json_loads(state, JSON_DECODE_ANY, NULL);
        if (!s)
            return -1;
    }
    agg_row *a = agg_get(b, tenant, type, id);
    json_decref(a->state);
    a->state = s;
    a->state_text = NULL;
    a->loaded_version = a->version = version;
    a->deleted = deleted;
    return 0;
}

static void reject(batch_item *it, problem_kind kind, const char *detail, json_t *errors,
                   long long current_version)
{
    it->state = ITEM_REJECTED;
    it->http_status = problem_status(kind);
    it->body = problem_new(kind, detail, errors);
    json_object_set_new(it->body, "command_id", json_string(it->env.id));
    if (current_version >= 0) {
        it->version = current_version;
        json_object_set_new(it->body, "current_version", json_integer(current_version));
    }
}

static void reject_dead(batch_item *it)
{
    problem_kind kind = PROBLEM_INVALID_REQUEST;
    json_t *errors = NULL;
    if (strcmp(it->dead_reason, DLQ_UNKNOWN_COMMAND) == 0) {
        kind = PROBLEM_UNKNOWN_COMMAND;
    } else if (strcmp(it->dead_reason, DLQ_INVALID_PAYLOAD) == 0) {
        kind = PROBLEM_INVALID_PAYLOAD;
        errors = json_loads(it->dead_detail, 0, NULL);
    }
    reject(it, kind,
           kind == PROBLEM_INVALID_PAYLOAD ? "the payload does not match the schema"
                                           : it->dead_detail,
           errors, -1);
}

/* Appends the members every applied item's texts begin with. */
static void applied_head(jsontext *t, const batch_item *it)
{
    JSONTEXT_LIT(t, "{\"command_id\":");
    jsontext_str(t, it->env.id);
}

static void applied_aggregate(jsontext *t, const batch_item *it, const char *type)
{
    JSONTEXT_LIT(t, ",\"aggregate_type\":");
    jsontext_str(t, type);
    JSONTEXT_LIT(t, ",\"aggregate_id\":");
    jsontext_str(t, it->env.subject);
    JSONTEXT_LIT(t, ",\"version\":");
    jsontext_int(t, it->version);
}

/*
 * The applied item's texts: its new state encoded once, and the reply body and the event's data
 * built around it, the same members as it->body and as the event's data were as trees.
 */
static void encode_applied(batch_item *it, agg_row *a, const char *type)
{
    jsontext t = {0};
    jsontext_json(&t, a->state);
    it->state_text = jsontext_finish(&t, NULL);
    a->state_text = it->state_text;
    if (!it->state_text)
        return;

    applied_head(&t, it);
    JSONTEXT_LIT(&t, ",\"status\":\"applied\"");
    applied_aggregate(&t, it, type);
    JSONTEXT_LIT(&t, ",\"state\":");
    jsontext_text(&t, it->state_text);
    JSONTEXT_LIT(&t, ",\"event\":{\"id\":");
    jsontext_str(&t, it->event_id);
    JSONTEXT_LIT(&t, ",\"type\":");
    jsontext_str(&t, domain_command_event(it->cmd));
    JSONTEXT_LIT(&t, "}}");
    it->body_text = jsontext_finish(&t, NULL);

    applied_head(&t, it);
    JSONTEXT_LIT(&t, ",\"command_type\":");
    jsontext_str(&t, it->env.type);
    applied_aggregate(&t, it, type);
    JSONTEXT_LIT(&t, ",\"payload\":");
    jsontext_json(&t, it->payload);
    JSONTEXT_LIT(&t, ",\"state\":");
    jsontext_text(&t, it->state_text);
    JSONTEXT_LIT(&t, "}");
    it->event_text = jsontext_finish(&t, NULL);
}

static void apply_one(batch *b, batch_item *it)
{
    const char *type = domain_command_aggregate(it->cmd);
    agg_row *a = agg_get(b, it->tenant, type, it->env.subject);
    json_t *current = a->deleted ? NULL : a->state;
    if (it->env.expected_version >= 0 && it->env.expected_version != a->version) {
        char detail[128];
        snprintf(detail, sizeof(detail), "expected version %lld, the aggregate is at %lld",
                 it->env.expected_version, a->version);
        reject(it, PROBLEM_VERSION_MISMATCH, detail, NULL, a->version);
        return;
    }
    if (it->env.expected_version == ENVELOPE_VERSION_EXISTS && !current) {
        reject(it, PROBLEM_VERSION_MISMATCH, "expected the aggregate to exist; it does not", NULL,
               a->version);
        return;
    }
    json_t *errors = json_array();
    json_t *next = NULL;
    domain_outcome o = domain_command_apply(it->cmd, current, it->payload, &next, errors);
    if (o != DOMAIN_OK) {
        /* The first explanation makes the detail line; all of them stay in "errors". */
        json_t *first = json_array_get(errors, 0);
        const char *ptr = json_string_value(json_object_get(first, "pointer"));
        const char *msg = json_string_value(json_object_get(first, "message"));
        char detail[300];
        if (msg)
            snprintf(detail, sizeof(detail), "%s%s%.200s", ptr && *ptr ? ptr : "",
                     ptr && *ptr ? ": " : "", msg);
        else
            snprintf(detail, sizeof(detail), "%s", domain_outcome_name(o));
        reject(it, problem_from_domain(o), detail, errors, a->version);
        return;
    }
    json_decref(errors);
    bool created = current == NULL;
    a->version++;
    a->dirty = true;
    json_decref(a->state);
    a->deleted = json_is_null(next);
    a->state = a->deleted ? NULL : json_incref(next);
    json_decref(next);

    it->state = ITEM_APPLIED;
    it->http_status = created ? 201 : 200;
    it->version = a->version;
    it->event_id = envelope_event_id(it->tenant, type, it->env.subject, a->version);
    /* States are never changed in place (the rules make a new one), so the body shares it. */
    it->body =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:O, s:{s:s, s:s}}", "command_id", it->env.id,
                  "status", "applied", "aggregate_type", type, "aggregate_id", it->env.subject,
                  "version", a->version, "state", a->state ? a->state : json_null(), "event", "id",
                  it->event_id, "type", domain_command_event(it->cmd));
    encode_applied(it, a, type);
}

void batch_apply(batch *b)
{
    for (size_t i = b->from; i < b->to; i++) {
        batch_item *it = &b->items[i];
        size_t p = partition_index(b, it->partition);
        if (b->stored_next[p] >= 0 && it->offset < b->stored_next[p]) {
            it->state = ITEM_SKIPPED;
            continue;
        }
        if (!it->recordable) {
            it->state = ITEM_REJECTED; /* dead letter only: nothing to record or answer */
            continue;
        }
        const known_cmd *k = earlier(b, it);
        if (k && undecided(k)) {
            /* Its key belongs to a command taken but not decided yet (another partition). */
            it->state = ITEM_DUPLICATE;
            it->http_status = problem_status(PROBLEM_IN_FLIGHT);
            it->body = problem_new(PROBLEM_IN_FLIGHT, NULL, NULL);
            json_object_set_new(it->body, "command_id", json_string(k->id));
            continue;
        }
        if (k) {
            it->state = ITEM_DUPLICATE;
            it->http_status = k->http_status;
            it->body = k->result ? json_incref(k->result) : json_null();
            continue;
        }
        if (it->dead_reason)
            reject_dead(it);
        else
            apply_one(b, it);
        /* Later items with the same key or id are duplicates of this one. */
        remember(b, it->tenant, it->idem_key, it->env.id,
                 it->state == ITEM_APPLIED ? "applied" : "rejected", it->http_status, it->body);
    }
}

/* The aggregate rows being written. */
typedef struct agg_rows {
    jsontext t;
    size_t n;
} agg_rows;

static void add_agg_row(const char *key, void *value, void *arg)
{
    (void)key;
    const agg_row *a = value;
    agg_rows *rows = arg;
    if (!a->dirty)
        return;
    jsontext *t = &rows->t;
    row_start(t, &rows->n, "tenant");
    jsontext_str(t, a->tenant);
    member(t, "type");
    jsontext_str(t, a->type);
    member(t, "id");
    jsontext_str(t, a->id);
    member(t, "prev_version");
    jsontext_int(t, a->loaded_version);
    member(t, "version");
    jsontext_int(t, a->version);
    member(t, "state");
    if (a->state_text) /* made by this batch: encoded once, with its item */
        jsontext_text(t, a->state_text);
    else
        jsontext_json(t, a->state);
    member(t, "deleted");
    jsontext_text(t, a->deleted ? "true" : "false");
    JSONTEXT_LIT(t, "}");
}

char *batch_aggregate_rows(const batch *b, size_t *count)
{
    agg_rows rows = {0};
    rows_open(&rows.t);
    strmap_each(b->aggregates, add_agg_row, &rows);
    return rows_close(&rows.t, rows.n, count);
}

/* Appends the item's reply body: the text made when it was applied, else its tree encoded. */
static void body_text(jsontext *t, const batch_item *it)
{
    if (it->state == ITEM_APPLIED) {
        if (it->body_text)
            jsontext_text(t, it->body_text);
        else
            t->failed = true; /* its state could not be encoded */
    } else {
        jsontext_json(t, it->body);
    }
}

char *batch_command_rows(const batch *b, size_t *count)
{
    jsontext t = {0};
    size_t n = 0;
    rows_open(&t);
    for (size_t i = b->from; i < b->to; i++) {
        const batch_item *it = &b->items[i];
        if (!it->recordable || (it->state != ITEM_APPLIED && it->state != ITEM_REJECTED))
            continue;
        const char *type = it->env.type;
        row_start(&t, &n, "id");
        jsontext_str(&t, it->env.id);
        member(&t, "tenant");
        jsontext_str(&t, it->tenant);
        member(&t, "idempotency_key");
        jsontext_str(&t, it->idem_key);
        member(&t, "type");
        jsontext_str(&t, type);
        member(&t, "aggregate_type");
        if (it->cmd) {
            jsontext_str(&t, domain_command_aggregate(it->cmd));
        } else { /* an unknown type: its aggregate is what comes before the dot */
            const char *dot = strchr(type, '.');
            char *agg_type = xstrndup(type, dot ? (size_t)(dot - type) : strlen(type));
            jsontext_str(&t, agg_type);
            free(agg_type);
        }
        member(&t, "aggregate_id");
        jsontext_str(&t, it->env.subject);
        member(&t, "request_hash");
        jsontext_str(&t,
                     it->env.request_hash && *it->env.request_hash ? it->env.request_hash : NULL);
        member(&t, "status");
        jsontext_str(&t, it->state == ITEM_APPLIED ? "applied" : "rejected");
        member(&t, "http_status");
        jsontext_int(&t, it->http_status);
        member(&t, "result");
        body_text(&t, it);
        member(&t, "partition");
        jsontext_int(&t, it->partition);
        member(&t, "offset");
        jsontext_int(&t, it->offset);
        member(&t, "version");
        if (it->version)
            jsontext_int(&t, it->version);
        else
            JSONTEXT_LIT(&t, "null");
        member(&t, "traceparent");
        jsontext_str(&t, it->env.traceparent);
        JSONTEXT_LIT(&t, "}");
    }
    return rows_close(&t, n, count);
}

json_t *batch_outbox_json(const batch *b)
{
    json_t *a = json_array();
    for (size_t i = b->from; i < b->to; i++) {
        const batch_item *it = &b->items[i];
        if (it->state != ITEM_APPLIED)
            continue;
        json_t *row =
            it->event_text
                ? json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "tenant", it->tenant,
                            "aggregate_type", domain_command_aggregate(it->cmd), "aggregate_id",
                            it->env.subject, "version", it->version, "event_type",
                            domain_command_event(it->cmd), "command_id", it->env.id,
                            RELAY_PAYLOAD_TEXT, it->event_text, "traceparent", it->traceparent)
                : NULL;
        if (row && it->env.tracestate)
            json_object_set_new(row, "tracestate", json_string(it->env.tracestate));
        if (!row || json_array_append_new(a, row) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

char *batch_outbox_rows(const batch *b, size_t *count)
{
    jsontext t = {0};
    size_t n = 0;
    rows_open(&t);
    for (size_t i = b->from; i < b->to; i++) {
        const batch_item *it = &b->items[i];
        if (it->state != ITEM_APPLIED)
            continue;
        row_start(&t, &n, "tenant");
        jsontext_str(&t, it->tenant);
        member(&t, "aggregate_type");
        jsontext_str(&t, domain_command_aggregate(it->cmd));
        member(&t, "aggregate_id");
        jsontext_str(&t, it->env.subject);
        member(&t, "version");
        jsontext_int(&t, it->version);
        member(&t, "event_type");
        jsontext_str(&t, domain_command_event(it->cmd));
        member(&t, "command_id");
        jsontext_str(&t, it->env.id);
        member(&t, "payload");
        if (it->event_text)
            jsontext_text(&t, it->event_text);
        else
            t.failed = true;
        member(&t, "traceparent");
        jsontext_str(&t, it->traceparent);
        if (it->env.tracestate) {
            member(&t, "tracestate");
            jsontext_str(&t, it->env.tracestate);
        }
        JSONTEXT_LIT(&t, "}");
    }
    return rows_close(&t, n, count);
}

char *batch_offset_rows(const batch *b, size_t *count)
{
    jsontext t = {0};
    size_t n = 0;
    rows_open(&t);
    for (size_t i = 0; i < b->npartitions; i++) {
        if (b->batch_next[i] <= b->stored_next[i])
            continue;
        row_start(&t, &n, "group_id");
        jsontext_str(&t, b->group);
        member(&t, "topic");
        jsontext_str(&t, b->topic);
        member(&t, "partition");
        jsontext_int(&t, b->partitions[i]);
        member(&t, "next_offset");
        jsontext_int(&t, b->batch_next[i]);
        JSONTEXT_LIT(&t, "}");
    }
    return rows_close(&t, n, count);
}

char *batch_reply(const batch_item *it)
{
    const char *status = it->state == ITEM_APPLIED    ? "applied"
                         : it->state == ITEM_REJECTED ? "rejected"
                         : it->http_status < 400      ? "applied"
                                                      : "rejected";
    jsontext t = {0};
    JSONTEXT_LIT(&t, "{\"command_id\":");
    jsontext_str(&t, it->env.id);
    JSONTEXT_LIT(&t, ",\"status\":");
    jsontext_str(&t, status);
    JSONTEXT_LIT(&t, ",\"http_status\":");
    jsontext_int(&t, it->http_status);
    JSONTEXT_LIT(&t, ",\"body\":");
    body_text(&t, it);
    JSONTEXT_LIT(&t, ",\"replayed\":");
    jsontext_text(&t, it->state == ITEM_DUPLICATE ? "true" : "false");
    JSONTEXT_LIT(&t, "}");
    return jsontext_finish(&t, NULL);
}
