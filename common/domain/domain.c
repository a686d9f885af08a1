/* domain.c: loads domain files into a command registry and applies their declarative rules. */
#include "domain/domain.h"

#include "domain/jsonpatch.h"
#include "jsonschema/jsonschema.h"
#include "domain/projection.h"
#include "core/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    OP_CREATE,
    OP_MERGE,
    OP_INCREMENT,
    OP_DECREMENT,
    OP_SET,
    OP_REMOVE,
    OP_DELETE
} rule_op;
typedef enum { REQ_ABSENT, REQ_PRESENT, REQ_ANY } rule_requires;

/* The ops and the rule keys each accepts besides "op", "requires" and "where". */
static const struct {
    const char *name;
    rule_op op;
    const char *keys[3];
} ops[] = {
    {"create", OP_CREATE, {"defaults"}},
    {"merge", OP_MERGE, {"at"}},
    {"increment", OP_INCREMENT, {"field", "by"}},
    {"decrement", OP_DECREMENT, {"field", "by"}},
    {"set", OP_SET, {"values"}},
    {"remove", OP_REMOVE, {"at"}},
    {"delete", OP_DELETE, {0}},
};
#define NOPS (sizeof ops / sizeof ops[0])

static const char *const requires_names[] = {"absent", "present", "any"};

typedef struct {
    char *name;
    jschema *state;
    json_t *source; /* the domain file as loaded, for documentation (openapi.c) */
    projection *proj;
} aggregate;

struct domain_command {
    char *type;
    char *event;
    const aggregate *agg;
    jschema *payload;
    rule_op op;
    rule_requires requires;
    json_t *where;    /* object of field -> required value, or NULL */
    json_t *defaults; /* create: object or NULL */
    json_t *values;   /* set: object */
    char *field;      /* increment, decrement: the state field */
    char *by;         /* increment, decrement: the payload field holding the amount */
    size_t nat;       /* merge, remove: the path "at", as tokens (0 for merge: the root) */
    char **at;        /* member names; for a "{name}" token, the payload member's name */
    bool *at_var;     /* at[i] names a payload member whose value is the token */
    json_t *source;   /* the command's definition as written, for documentation */
};

struct domain_registry {
    aggregate **aggs;
    size_t naggs;
    domain_command **cmds; /* sorted by type once loading is done */
    size_t ncmds;
};

/* Where a load error is reported: every message starts with the file name. */
typedef struct {
    const char *file;
    char *err;
    size_t errlen;
} loadctx;

/*
 * Reports "file: path.member: message"; path and member may be NULL. Always returns false.
 * Paths are dotted ("commands.account.open.rule.op"), as written in docs/domains.md.
 */
static bool lfail(loadctx *l, const char *path, const char *member, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool lfail(loadctx *l, const char *path, const char *member, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path && member)
        snprintf(l->err, l->errlen, "%s: %s.%s: %s", l->file, path, member, msg);
    else if (path || member)
        snprintf(l->err, l->errlen, "%s: %s: %s", l->file, path ? path : member, msg);
    else
        snprintf(l->err, l->errlen, "%s: %s", l->file, msg);
    return false;
}

/* True when s is non-empty and made only of the characters in allowed. */
static bool name_ok(const char *s, const char *allowed)
{
    return *s && strspn(s, allowed) == strlen(s);
}

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyz0123456789_-"

/* True when s is "<aggregate>.<name>". */
static bool prefixed(const char *s, const char *aggregate_name)
{
    size_t n = strlen(aggregate_name);
    return strncmp(s, aggregate_name, n) == 0 && s[n] == '.' && name_ok(s + n + 1, NAME_CHARS);
}

static void command_free(domain_command *c)
{
    if (!c)
        return;
    free(c->type);
    free(c->event);
    jschema_free(c->payload);
    json_decref(c->where);
    json_decref(c->defaults);
    json_decref(c->values);
    free(c->field);
    free(c->by);
    for (size_t i = 0; i < c->nat; i++)
        free(c->at[i]);
    free(c->at);
    free(c->at_var);
    json_decref(c->source);
    free(c);
}

/* Compiles the schema in member of obj (at path), reporting its errors there. */
static jschema *load_schema(loadctx *l, const char *path, const json_t *obj, const char *member)
{
    char why[384];
    const json_t *schema = json_object_get(obj, member);
    if (!schema) {
        lfail(l, path, member, "missing");
        return NULL;
    }
    jschema *s = jschema_compile(schema, why, sizeof why);
    if (!s)
        lfail(l, path, member, "%s", why);
    return s;
}

/* Copies member of obj, which must be an object when present, into *out (a new reference). */
static bool load_object(loadctx *l, const char *path, const json_t *obj, const char *member,
                        json_t **out)
{
    const json_t *v = json_object_get(obj, member);
    if (!v)
        return true;
    if (!json_is_object(v))
        return lfail(l, path, member, "must be an object");
    *out = json_deep_copy(v);
    return true;
}

/*
 * Parses "at": "/items/{sku}", a path of object members from the root of the state. A token
 * "{name}" is replaced by the payload's member name when the command applies, so that member must
 * be required by the payload schema. A literal token is an RFC 6901 token (~0, ~1 escapes).
 */
static bool load_at(loadctx *l, const char *path, const json_t *rule, const json_t *payload_schema,
                    domain_command *c)
{
    const json_t *v = json_object_get(rule, "at");
    if (!v)
        return true;
    const char *at = json_string_value(v);
    if (!at || at[0] != '/')
        return lfail(l, path, "at", "must be a path such as \"/items/{sku}\"");
    const json_t *required = json_object_get(payload_schema, "required");
    for (const char *tok = at; *tok == '/';) {
        tok++;
        size_t len = strcspn(tok, "/");
        char *name = xstrndup(tok, len);
        bool var = len > 2 && name[0] == '{' && name[len - 1] == '}';
        if (var) {
            memmove(name, name + 1, len - 2);
            name[len - 2] = '\0';
            bool listed = false;
            for (size_t i = 0; i < json_array_size(required); i++) {
                const char *r = json_string_value(json_array_get(required, i));
                listed |= r && strcmp(r, name) == 0;
            }
            if (!listed) {
                lfail(l, path, "at", "'{%s}' needs '%s' in the payload schema's \"required\"", name,
                      name);
                free(name);
                return false;
            }
        } else if (len == 0 || strchr(name, '{') || strchr(name, '}')) {
            lfail(l, path, "at", "'%s': each token is a member name or a whole {name}", at);
            free(name);
            return false;
        } else {
            char *out = name; /* ~1 is '/', ~0 is '~' */
            for (const char *p = name; *p; p++) {
                if (*p == '~' && (p[1] == '0' || p[1] == '1')) {
                    p++;
                    *out++ = *p == '0' ? '~' : '/';
                } else {
                    *out++ = *p;
                }
            }
            *out = '\0';
        }
        c->at = xrealloc(c->at, (c->nat + 1) * sizeof *c->at);
        c->at_var = xrealloc(c->at_var, (c->nat + 1) * sizeof *c->at_var);
        c->at[c->nat] = name;
        c->at_var[c->nat++] = var;
        tok += len;
    }
    return true;
}

static bool load_rule(loadctx *l, const char *path, const json_t *rule,
                      const json_t *payload_schema, domain_command *c)
{
    if (!json_is_object(rule))
        return lfail(l, path, NULL, "must be an object");
    const char *op = json_string_value(json_object_get(rule, "op"));
    if (!op)
        return lfail(l, path, "op", "missing or not a string");
    size_t k = 0;
    while (k < NOPS && strcmp(ops[k].name, op) != 0)
        k++;
    if (k == NOPS)
        return lfail(l, path, "op", "unknown op '%s'", op);
    c->op = ops[k].op;

    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)rule, key, v)
    {
        bool known = !strcmp(key, "op") || !strcmp(key, "requires") || !strcmp(key, "where");
        for (size_t i = 0; i < 3 && ops[k].keys[i]; i++)
            known |= strcmp(key, ops[k].keys[i]) == 0;
        if (!known)
            return lfail(l, path, NULL, "unknown key '%s' for op '%s'", key, op);
    }

    const char *req = json_string_value(json_object_get(rule, "requires"));
    if (!req)
        return lfail(l, path, "requires", "missing or not a string (absent, present or any)");
    size_t r = 0;
    while (r < 3 && strcmp(requires_names[r], req) != 0)
        r++;
    if (r == 3)
        return lfail(l, path, "requires", "unknown value '%s' (absent, present or any)", req);
    c->requires = (rule_requires)r;

    if (!load_object(l, path, rule, "where", &c->where) ||
        !load_object(l, path, rule, "defaults", &c->defaults) ||
        !load_object(l, path, rule, "values", &c->values))
        return false;
    /* An absent aggregate has no fields to compare, so "where" only makes sense on "present". */
    if (c->where && c->requires != REQ_PRESENT)
        return lfail(l, path, "where", "needs \"requires\": \"present\"");
    if (c->op == OP_SET && !c->values)
        return lfail(l, path, "values", "missing (op 'set' needs an object of values)");
    if (c->op == OP_INCREMENT || c->op == OP_DECREMENT) {
        const char *field = json_string_value(json_object_get(rule, "field"));
        const char *by = json_string_value(json_object_get(rule, "by"));
        if (!field || !by)
            return lfail(l, path, field ? "by" : "field",
                         "missing or not a string (op '%s' needs field and by)", op);
        c->field = xstrdup(field);
        c->by = xstrdup(by);
    }
    if (c->op == OP_REMOVE && !json_object_get(rule, "at"))
        return lfail(l, path, "at", "missing (op 'remove' needs the path of the member to remove)");
    return load_at(l, path, rule, payload_schema, c);
}

static bool load_command(loadctx *l, domain_registry *reg, const aggregate *agg, const char *type,
                         const json_t *def)
{
    char *path = xasprintf("commands.%s", type);
    domain_command *c = NULL;
    bool ok = false;
    if (!prefixed(type, agg->name)) {
        lfail(l, path, NULL, "command type must be '%s.<name>' (lower-case letters, digits, _ -)",
              agg->name);
        goto done;
    }
    for (size_t i = 0; i < reg->ncmds; i++) {
        if (strcmp(reg->cmds[i]->type, type) == 0) {
            lfail(l, path, NULL, "command type defined twice");
            goto done;
        }
    }
    if (!json_is_object(def)) {
        lfail(l, path, NULL, "must be an object");
        goto done;
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)def, key, v)
    {
        if (strcmp(key, "event") && strcmp(key, "payload") && strcmp(key, "rule") &&
            strcmp(key, "description")) {
            lfail(l, path, NULL, "unknown key '%s'", key);
            goto done;
        }
    }
    const char *event = json_string_value(json_object_get(def, "event"));
    if (!event || !prefixed(event, agg->name)) {
        lfail(l, path, "event", "must be a string '%s.<name>'", agg->name);
        goto done;
    }

    c = xcalloc(1, sizeof *c);
    c->type = xstrdup(type);
    c->event = xstrdup(event);
    c->agg = agg;
    c->source = json_deep_copy(def);
    c->payload = load_schema(l, path, def, "payload");
    if (!c->payload)
        goto done;
    char *rule_path = xasprintf("%s.rule", path);
    ok = load_rule(l, rule_path, json_object_get(def, "rule"), json_object_get(def, "payload"), c);
    free(rule_path);
    if (ok) {
        reg->cmds = xrealloc(reg->cmds, (reg->ncmds + 1) * sizeof *reg->cmds);
        reg->cmds[reg->ncmds++] = c;
        c = NULL;
    }
done:
    command_free(c);
    free(path);
    return ok;
}

static bool load_file(domain_registry *reg, const char *dir, const char *name, char *err,
                      size_t errlen)
{
    char *file = xasprintf("%s/%s", dir, name);
    loadctx l = {.file = file, .err = err, .errlen = errlen};
    bool ok = false;
    json_error_t jerr;
    json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        lfail(&l, NULL, NULL, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        goto done;
    }
    if (!json_is_object(root)) {
        lfail(&l, NULL, NULL, "must hold a JSON object");
        goto done;
    }
    const char *key;
    const json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "aggregate") && strcmp(key, "state") && strcmp(key, "commands") &&
            strcmp(key, "description") && strcmp(key, "projection")) {
            lfail(&l, NULL, NULL, "unknown key '%s'", key);
            goto done;
        }
    }
    /* The file is named after its aggregate, which also makes aggregate names unique. */
    const char *agg_name = json_string_value(json_object_get(root, "aggregate"));
    size_t stem = strlen(name) - strlen(".json");
    if (!agg_name || !name_ok(agg_name, "abcdefghijklmnopqrstuvwxyz0123456789_") ||
        strlen(agg_name) != stem || strncmp(agg_name, name, stem) != 0) {
        lfail(&l, "aggregate", NULL, "must be a string of [a-z0-9_] equal to the file name '%.*s'",
              (int)stem, name);
        goto done;
    }
    aggregate *agg = xcalloc(1, sizeof *agg);
    agg->name = xstrdup(agg_name);
    agg->source = json_incref(root);
    reg->aggs = xrealloc(reg->aggs, (reg->naggs + 1) * sizeof *reg->aggs);
    reg->aggs[reg->naggs++] = agg;
    agg->state = load_schema(&l, NULL, root, "state");
    if (!agg->state)
        goto done;
    /* The processor stores a deleted aggregate as null, so a live state must never be null. */
    if (jschema_validate(agg->state, json_null(), NULL)) {
        lfail(&l, "state", NULL,
              "must reject null, which means deleted (add \"type\": \"object\")");
        goto done;
    }
    char why[384];
    agg->proj = projection_parse(agg->name, json_object_get(root, "projection"), why, sizeof why);
    if (!agg->proj) {
        lfail(&l, NULL, NULL, "%s", why);
        goto done;
    }
    const json_t *cmds = json_object_get(root, "commands");
    if (!json_is_object(cmds) || json_object_size(cmds) == 0) {
        lfail(&l, "commands", NULL, "must be a non-empty object");
        goto done;
    }
    json_object_foreach((json_t *)cmds, key, v)
    {
        if (!load_command(&l, reg, agg, key, v))
            goto done;
    }
    ok = true;
done:
    json_decref(root);
    free(file);
    return ok;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_commands(const void *a, const void *b)
{
    const domain_command *x = *(domain_command *const *)a, *y = *(domain_command *const *)b;
    return strcmp(x->type, y->type);
}

domain_registry *domain_registry_load(const char *dir, char *err, size_t errlen)
{
    char scratch[1];
    if (!err) {
        err = scratch;
        errlen = sizeof scratch;
    }
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_names);

    domain_registry *r = xcalloc(1, sizeof *r);
    bool ok = n > 0;
    if (!ok)
        snprintf(err, errlen, "%s: no *.json domain files", dir);
    for (size_t i = 0; ok && i < n; i++)
        ok = load_file(r, dir, names[i], err, errlen);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (!ok) {
        domain_registry_free(r);
        return NULL;
    }
    if (r->ncmds > 1)
        qsort(r->cmds, r->ncmds, sizeof *r->cmds, cmp_commands);
    return r;
}

void domain_registry_free(domain_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->ncmds; i++)
        command_free(r->cmds[i]);
    free(r->cmds);
    for (size_t i = 0; i < r->naggs; i++) {
        free(r->aggs[i]->name);
        jschema_free(r->aggs[i]->state);
        json_decref(r->aggs[i]->source);
        projection_free(r->aggs[i]->proj);
        free(r->aggs[i]);
    }
    free(r->aggs);
    free(r);
}

const domain_command *domain_registry_find(const domain_registry *r, const char *command_type)
{
    size_t lo = 0, hi = r->ncmds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(command_type, r->cmds[mid]->type);
        if (cmp == 0)
            return r->cmds[mid];
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

bool domain_registry_has_aggregate(const domain_registry *r, const char *aggregate_type)
{
    for (size_t i = 0; i < r->naggs; i++)
        if (strcmp(r->aggs[i]->name, aggregate_type) == 0)
            return true;
    return false;
}

size_t domain_registry_command_count(const domain_registry *r)
{
    return r->ncmds;
}

const domain_command *domain_registry_command_at(const domain_registry *r, size_t i)
{
    return i < r->ncmds ? r->cmds[i] : NULL;
}

const char *domain_command_type(const domain_command *c)
{
    return c->type;
}

const char *domain_command_aggregate(const domain_command *c)
{
    return c->agg->name;
}

const char *domain_command_event(const domain_command *c)
{
    return c->event;
}

bool domain_command_validate(const domain_command *c, const json_t *payload, json_t *errors)
{
    return jschema_validate(c->payload, payload, errors);
}

/* ---- apply ---- */

/* Appends an error at the pointer to top-level member name ("" when name is NULL). */
static void report(json_t *errors, const char *name, const char *keyword, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(json_t *errors, const char *name, const char *keyword, const char *fmt, ...)
{
    if (!json_is_array(errors))
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *pointer = name ? jschema_pointer_append(NULL, name) : xstrdup("");
    jschema_error_append(errors, pointer, keyword, msg);
    free(pointer);
}

/* Reads an integer-valued number (1 or 1.0, as the schema type "integer" allows). */
static bool as_int(const json_t *j, json_int_t *out)
{
    if (json_is_integer(j)) {
        *out = json_integer_value(j);
        return true;
    }
    if (!json_is_real(j))
        return false;
    /* Range first: converting an out-of-range double (or NaN) to an integer is undefined. */
    double d = json_real_value(j);
    if (!(d >= -9.2e18 && d <= 9.2e18) || d != (double)(json_int_t)d)
        return false;
    *out = (json_int_t)d;
    return true;
}

/* Checks every "where" field against the current state. */
static bool where_holds(const domain_command *c, const json_t *state, json_t *errors)
{
    bool ok = true;
    const char *name;
    const json_t *want;
    json_object_foreach(c->where, name, want)
    {
        const json_t *have = json_object_get(state, name);
        if (have && jschema_equal(have, want))
            continue;
        char *w = json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT);
        char *h = have ? json_dumps(have, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        report(errors, name, "where", "must equal %s (is %s)", w ? w : "?", h ? h : "absent");
        free(w);
        free(h);
        ok = false;
    }
    return ok;
}

/* increment and decrement: field += or -= the payload's "by" member, checked for overflow. */
static domain_outcome add(const domain_command *c, json_t *next, const json_t *payload,
                          json_t *errors)
{
    json_int_t cur, by, sum;
    if (!as_int(json_object_get(payload, c->by), &by)) {
        report(errors, c->by, "type", "must be an integer");
        return DOMAIN_INVALID_PAYLOAD;
    }
    const char *op = c->op == OP_INCREMENT ? "increment" : "decrement";
    if (!as_int(json_object_get(next, c->field), &cur)) {
        report(errors, c->field, op, "must be an integer to %s", op);
        return DOMAIN_PRECONDITION;
    }
    bool overflow = c->op == OP_INCREMENT ? __builtin_add_overflow(cur, by, &sum)
                                          : __builtin_sub_overflow(cur, by, &sum);
    if (overflow) {
        report(errors, c->field, op, "integer overflow");
        return DOMAIN_INVARIANT;
    }
    json_object_set_new(next, c->field, json_integer(sum));
    return DOMAIN_OK;
}

/*
 * The member names of the rule's "at" path for this payload (borrowed from c and payload; caller
 * frees the array), or NULL with an error when a {name} member is not a string.
 */
static const char **at_names(const domain_command *c, const json_t *payload, json_t *errors)
{
    const char **names = xcalloc(c->nat, sizeof *names);
    for (size_t i = 0; i < c->nat; i++) {
        names[i] = c->at_var[i] ? json_string_value(json_object_get(payload, c->at[i])) : c->at[i];
        if (!names[i]) {
            report(errors, c->at[i], "at", "must be a string: it names a member of the state");
            free(names);
            return NULL;
        }
    }
    return names;
}

/* RFC 6901 pointer of the first n names; caller frees. */
static char *names_pointer(const char **names, size_t n)
{
    char *p = NULL;
    for (size_t i = 0; i < n; i++)
        p = jschema_pointer_append(p, names[i]);
    return p ? p : xstrdup("");
}

/*
 * merge with "at": the payload, less the members that name the path, is the merge patch of the
 * member at the path; wrapping it in one object per token makes that a merge patch of the root,
 * so RFC 7396 alone decides (missing objects on the way are created).
 */
static json_t *merge_at(const domain_command *c, const json_t *state, const json_t *payload,
                        const char **names)
{
    json_t *patch = json_deep_copy(payload);
    for (size_t i = 0; i < c->nat; i++)
        if (c->at_var[i])
            json_object_del(patch, c->at[i]);
    for (size_t i = c->nat; i-- > 0;) {
        json_t *wrap = json_object();
        json_object_set_new(wrap, names[i], patch);
        patch = wrap;
    }
    json_t *next = jsonpatch_merge(state, patch);
    json_decref(patch);
    return next;
}

/* remove: deletes the member at the path, which must exist. */
static domain_outcome remove_at(const domain_command *c, json_t *next, const char **names,
                                json_t *errors)
{
    if (c->nat == 0 || !names) /* never: loading makes "at" required for remove */
        return DOMAIN_PRECONDITION;
    json_t *parent = next;
    for (size_t i = 0; i + 1 < c->nat && json_is_object(parent); i++)
        parent = json_object_get(parent, names[i]);
    if (!json_is_object(parent) || !json_object_get(parent, names[c->nat - 1])) {
        char *pointer = names_pointer(names, c->nat);
        jschema_error_append(errors, pointer, "remove", "does not exist");
        free(pointer);
        return DOMAIN_PRECONDITION;
    }
    json_object_del(parent, names[c->nat - 1]);
    return DOMAIN_OK;
}

/* Computes the new state from the current one (NULL when absent) by the command's op. */
static domain_outcome compute(const domain_command *c, const json_t *state, const json_t *payload,
                              json_t **out, json_t *errors)
{
    json_t *next = NULL, *copy;
    domain_outcome o = DOMAIN_OK;
    const char **names = NULL;
    if (c->nat && !(names = at_names(c, payload, errors)))
        return DOMAIN_INVALID_PAYLOAD;
    switch (c->op) {
    case OP_CREATE:
        if (!json_is_object(payload)) {
            report(errors, NULL, "type", "must be of type object");
            return DOMAIN_INVALID_PAYLOAD;
        }
        /* Defaults first, then the payload's members on top (a shallow merge). */
        next = c->defaults ? json_deep_copy(c->defaults) : json_object();
        copy = json_deep_copy(payload);
        json_object_update(next, copy);
        json_decref(copy);
        break;
    case OP_MERGE:
        next = names ? merge_at(c, state, payload, names) : jsonpatch_merge(state, payload);
        break;
    case OP_REMOVE:
        next = json_is_object(state) ? json_deep_copy(state) : json_object();
        o = remove_at(c, next, names, errors);
        break;
    case OP_INCREMENT:
    case OP_DECREMENT:
        next = json_is_object(state) ? json_deep_copy(state) : json_object();
        o = add(c, next, payload, errors);
        break;
    case OP_SET:
        next = json_is_object(state) ? json_deep_copy(state) : json_object();
        copy = json_deep_copy(c->values);
        json_object_update(next, copy);
        json_decref(copy);
        break;
    case OP_DELETE:
        next = json_null();
        break;
    }
    free(names);
    if (o != DOMAIN_OK) {
        json_decref(next);
        return o;
    }
    *out = next;
    return DOMAIN_OK;
}

domain_outcome domain_command_apply(const domain_command *c, const json_t *state,
                                    const json_t *payload, json_t **new_state, json_t *errors)
{
    *new_state = NULL;
    if (!payload || !jschema_validate(c->payload, payload, errors))
        return DOMAIN_INVALID_PAYLOAD;
    bool present = state && !json_is_null(state);
    if (c->requires == REQ_ABSENT && present) {
        report(errors, NULL, "requires", "%s already exists", c->agg->name);
        return DOMAIN_ALREADY_EXISTS;
    }
    if (c->requires == REQ_PRESENT && !present) {
        report(errors, NULL, "requires", "%s does not exist", c->agg->name);
        return DOMAIN_NOT_FOUND;
    }
    if (c->where && !where_holds(c, state, errors))
        return DOMAIN_PRECONDITION;
    json_t *next = NULL;
    domain_outcome o = compute(c, present ? state : NULL, payload, &next, errors);
    if (o != DOMAIN_OK)
        return o;
    /* Invariants live in the state schema; only a deletion leaves nothing to check. */
    if (c->op != OP_DELETE && !jschema_validate(c->agg->state, next, errors)) {
        json_decref(next);
        return DOMAIN_INVARIANT;
    }
    *new_state = next;
    return DOMAIN_OK;
}

const char *domain_outcome_name(domain_outcome o)
{
    /* Indexed by domain_outcome; these names appear in replies and logs, so never rename. */
    static const char *const names[] = {
        "ok", "invalid_payload", "not_found", "already_exists", "precondition", "invariant"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "unknown";
}

/* ---- the definitions as written, for documentation ---- */

const json_t *domain_command_payload_schema(const domain_command *c)
{
    return json_object_get(c->source, "payload");
}

const char *domain_command_description(const domain_command *c)
{
    return json_string_value(json_object_get(c->source, "description"));
}

size_t domain_registry_aggregate_count(const domain_registry *r)
{
    return r->naggs;
}

const char *domain_registry_aggregate_name(const domain_registry *r, size_t i)
{
    return i < r->naggs ? r->aggs[i]->name : NULL;
}

const json_t *domain_registry_aggregate_state_schema(const domain_registry *r, size_t i)
{
    return i < r->naggs ? json_object_get(r->aggs[i]->source, "state") : NULL;
}

const char *domain_registry_aggregate_description(const domain_registry *r, size_t i)
{
    return i < r->naggs ? json_string_value(json_object_get(r->aggs[i]->source, "description"))
                        : NULL;
}

const projection *domain_registry_projection(const domain_registry *r, const char *aggregate_type)
{
    for (size_t i = 0; i < r->naggs; i++)
        if (strcmp(r->aggs[i]->name, aggregate_type) == 0)
            return r->aggs[i]->proj;
    return NULL;
}
