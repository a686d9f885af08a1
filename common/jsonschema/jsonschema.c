/* jsonschema.c: the validator core: compiles schemas into keyword trees and walks them. */
#include "jsonschema/jsonschema.h"

#include "jsonschema/jskeyword.h"
#include "jsonschema/jsregex.h"
#include "core/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growable string holding a JSON pointer while compiling or validating. */
typedef struct {
    char *s;
    size_t len, cap;
} pathbuf;

struct jskw_compile {
    char *err;
    size_t errlen;
    pathbuf path;       /* pointer into the schema */
    const json_t *root; /* the schema document, for resolving $ref */
    jschema *owner;     /* the root node: owns every node of the tree */
};

struct jskw_check {
    json_t *errors; /* NULL when only the verdict matters: stop at the first failure */
    pathbuf *path;  /* pointer into the instance */
    unsigned depth; /* schema nodes entered, against JSCHEMA_MAX_DEPTH */
};

/*
 * $ref may make the tree a graph, cycles included, so nodes are not owned by their parents: the
 * root holds every node in one list and frees them all at once.
 */
struct jschema {
    const json_t *json; /* the schema value compiled, borrowed from the root's doc */
    int boolean;        /* 0 or 1 for a boolean schema, -1 for an object schema */
    size_t nkw;
    jkw *kw;
    json_t *doc;     /* root only: the copy of the schema every keyword value points into */
    jschema **nodes; /* root only: every node, this one included */
    size_t nnodes, capnodes;
};

/*
 * How deep one validation may nest schema nodes. It bounds recursion through $ref cycles (a
 * schema that refers to itself without descending into the instance) and through deep instances,
 * so validation ends with an error instead of exhausting the stack.
 */
#define JSCHEMA_MAX_DEPTH 512

/* ---- JSON pointers (RFC 6901) ---- */

static void path_init(pathbuf *p)
{
    p->cap = 64;
    p->len = 0;
    p->s = xmalloc(p->cap);
    p->s[0] = '\0';
}

/* Appends "/token" with '~' and '/' escaped; returns the previous length for path_pop(). */
static size_t path_push(pathbuf *p, const char *token)
{
    size_t mark = p->len, need = p->len + 2 * strlen(token) + 2;
    if (need > p->cap) {
        p->cap = need * 2;
        p->s = xrealloc(p->s, p->cap);
    }
    p->s[p->len++] = '/';
    for (const char *t = token; *t; t++) {
        if (*t == '~' || *t == '/') {
            p->s[p->len++] = '~';
            p->s[p->len++] = *t == '~' ? '0' : '1';
        } else {
            p->s[p->len++] = *t;
        }
    }
    p->s[p->len] = '\0';
    return mark;
}

static void path_pop(pathbuf *p, size_t mark)
{
    p->len = mark;
    p->s[mark] = '\0';
}

char *jschema_pointer_append(char *pointer, const char *token)
{
    pathbuf p = {.s = pointer, .len = pointer ? strlen(pointer) : 0};
    p.cap = p.len + 1;
    if (!pointer)
        path_init(&p);
    path_push(&p, token);
    return p.s;
}

/* ---- equality ---- */

int jschema_num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    double x = json_number_value(a), y = json_number_value(b);
    return (x > y) - (x < y);
}

bool jschema_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return jschema_num_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *key;
        const json_t *va;
        json_object_foreach((json_t *)a, key, va)
        {
            const json_t *vb = json_object_get(b, key);
            if (!vb || !jschema_equal(va, vb))
                return false;
        }
        return true;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!jschema_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    return json_equal(a, b);
}

/* ---- compiling ---- */

bool jschema_compile_fail(jskw_compile *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "schema at %s: %s", c->path.len ? c->path.s : "(root)", msg);
    return false;
}

static void free_node(jschema *s)
{
    for (size_t i = 0; i < s->nkw; i++) {
        jkw *kw = &s->kw[i];
        free(kw->sub);
        free(kw->names);
        for (size_t k = 0; k < kw->nre; k++)
            jsregex_free(kw->re[k]);
        free(kw->re);
        free(kw->message);
    }
    free(s->kw);
    free(s);
}

/* A new node, listed in the root's nodes before its keywords compile, so $ref can find it. */
static jschema *node_new(jskw_compile *c, const json_t *schema)
{
    jschema *s = xcalloc(1, sizeof *s);
    s->json = schema;
    jschema *root = c->owner ? c->owner : s;
    if (root->nnodes == root->capnodes) {
        root->capnodes = root->capnodes ? root->capnodes * 2 : 16;
        root->nodes = xrealloc(root->nodes, root->capnodes * sizeof *root->nodes);
    }
    root->nodes[root->nnodes++] = s;
    if (!c->owner)
        c->owner = s;
    return s;
}

static jschema *compile_node(const json_t *schema, jskw_compile *c)
{
    if (!json_is_boolean(schema) && !json_is_object(schema)) {
        jschema_compile_fail(c, "a schema must be an object or a boolean");
        return NULL;
    }
    /* Refuse unknown keywords first: a misspelt keyword must never be silently ignored. */
    const char *name;
    const json_t *value;
    json_object_foreach((json_t *)schema, name, value)
    {
        if (!jskeyword_find(name)) {
            size_t mark = path_push(&c->path, name);
            snprintf(c->err, c->errlen, "unsupported keyword '%s' at %s", name, c->path.s);
            path_pop(&c->path, mark);
            return NULL;
        }
    }
    jschema *s = node_new(c, schema);
    s->boolean = json_is_boolean(schema) ? json_is_true(schema) : -1;
    if (s->boolean >= 0)
        return s;
    s->kw = xcalloc(json_object_size(schema), sizeof *s->kw);
    const jskeyword *def;
    for (size_t i = 0; (def = jskeyword_at(i)) != NULL; i++) {
        value = json_object_get(schema, def->name);
        if (!value || !def->compile)
            continue;
        jkw *kw = &s->kw[s->nkw++];
        kw->def = def;
        kw->value = value;
        kw->schema = schema;
        kw->node = s;
        size_t mark = path_push(&c->path, def->name);
        bool ok = def->compile(kw, value, c);
        path_pop(&c->path, mark);
        if (!ok)
            return NULL; /* the node stays listed: the root frees it */
    }
    return s;
}

jschema *jschema_compile_at(jskw_compile *c, const char *token, const json_t *schema)
{
    size_t mark = token ? path_push(&c->path, token) : c->path.len;
    jschema *s = compile_node(schema, c);
    path_pop(&c->path, mark);
    return s;
}

bool jschema_is_root(const jskw_compile *c, const jkw *kw)
{
    return kw->node == c->owner;
}

/* Decodes %XX escapes of a URI fragment in place; false on a malformed escape. */
static bool percent_decode(char *s)
{
    char *out = s;
    for (const char *p = s; *p; p++) {
        if (*p != '%') {
            *out++ = *p;
            continue;
        }
        unsigned v;
        if (!p[1] || !p[2] || sscanf(p + 1, "%2x", &v) != 1 || v == 0)
            return false;
        *out++ = (char)v;
        p += 2;
    }
    *out = '\0';
    return true;
}

/* Follows an RFC 6901 pointer (already percent-decoded) from root; NULL where it leads nowhere.
 * Empty tokens are real member names ("/a//b" has three), so the pointer is split by hand. */
static const json_t *pointer_get(const json_t *root, char *pointer)
{
    const json_t *at = root;
    for (char *tok = pointer; at && *tok == '/';) {
        tok++;
        char *next = strchr(tok, '/');
        size_t len = next ? (size_t)(next - tok) : strlen(tok);
        char *name = xmalloc(len + 1), *out = name; /* ~1 is '/', ~0 is '~' */
        for (size_t i = 0; i < len; i++) {
            if (tok[i] == '~' && i + 1 < len && (tok[i + 1] == '0' || tok[i + 1] == '1'))
                *out++ = tok[++i] == '0' ? '~' : '/';
            else
                *out++ = tok[i];
        }
        *out = '\0';
        if (json_is_object(at)) {
            at = json_object_get(at, name);
        } else if (json_is_array(at)) {
            char *end;
            unsigned long i = strtoul(name, &end, 10);
            at = *end || !*name ? NULL : json_array_get(at, i);
        } else {
            at = NULL;
        }
        free(name);
        tok += len;
    }
    return at;
}

jschema *jschema_resolve_ref(jskw_compile *c, const char *ref)
{
    if (ref[0] != '#' || (ref[1] && ref[1] != '/')) {
        jschema_compile_fail(c,
                             "'%s' is not a local JSON pointer reference ('#' or '#/...'): "
                             "only references inside the same document are supported",
                             ref);
        return NULL;
    }
    char *pointer = xstrdup(ref + 1);
    const json_t *target = percent_decode(pointer) ? pointer_get(c->root, pointer) : NULL;
    free(pointer);
    if (!target) {
        jschema_compile_fail(c, "'%s' points to nothing in this schema", ref);
        return NULL;
    }
    jschema *root = c->owner;
    for (size_t i = 0; i < root->nnodes; i++)
        if (root->nodes[i]->json == target)
            return root->nodes[i];
    /* Not compiled yet (a forward reference): compile it now, reporting errors at the ref. */
    return compile_node(target, c);
}

jschema *jschema_compile(const json_t *schema, char *err, size_t errlen)
{
    char scratch[1];
    jskw_compile c = {.err = err ? err : scratch, .errlen = err ? errlen : sizeof scratch};
    if (!schema) {
        snprintf(c.err, c.errlen, "schema is missing");
        return NULL;
    }
    /* Compile a private copy so the tree may borrow keyword values for its whole life. */
    json_t *doc = json_deep_copy(schema);
    c.root = doc;
    path_init(&c.path);
    jschema *s = compile_node(doc, &c);
    free(c.path.s);
    if (!s) {
        if (c.owner) {
            c.owner->doc = doc;
            jschema_free(c.owner);
        } else {
            json_decref(doc);
        }
        return NULL;
    }
    s->doc = doc;
    return s;
}

void jschema_free(jschema *s)
{
    if (!s)
        return;
    /* Only a root is ever handed out; it owns every node, itself last. */
    for (size_t i = s->nnodes; i-- > 1;)
        free_node(s->nodes[i]);
    free(s->nodes);
    json_decref(s->doc);
    free_node(s);
}

const jkw *jschema_sibling(const jkw *kw, const char *name)
{
    const jschema *s = kw->node;
    for (size_t i = 0; i < s->nkw; i++)
        if (strcmp(s->kw[i].def->name, name) == 0)
            return &s->kw[i];
    return NULL;
}

/* ---- validating ---- */

void jschema_error_append(json_t *errors, const char *pointer, const char *keyword,
                          const char *message)
{
    if (!json_is_array(errors))
        return;
    json_array_append_new(errors, json_pack("{s:s, s:s, s:s}", "pointer", pointer, "keyword",
                                            keyword, "message", message));
}

bool jschema_fail(jskw_check *v, const char *keyword, const char *message)
{
    jschema_error_append(v->errors, v->path->s, keyword, message);
    return false;
}

bool jschema_fail_at(jskw_check *v, const char *token, const char *keyword, const char *message)
{
    size_t mark = path_push(v->path, token);
    jschema_fail(v, keyword, message);
    path_pop(v->path, mark);
    return false;
}

bool jschema_collecting(const jskw_check *v)
{
    return v->errors != NULL;
}

bool jschema_is_false(const jschema *s)
{
    return s->boolean == 0;
}

static bool validate_node(const jschema *s, const json_t *inst, jskw_check *v)
{
    if (s->boolean >= 0)
        return s->boolean ? true : jschema_fail(v, "false", "no value is allowed here");
    if (v->depth >= JSCHEMA_MAX_DEPTH)
        return jschema_fail(v, "depth", "nests deeper than the validator's limit");
    v->depth++;
    bool ok = true;
    for (size_t i = 0; i < s->nkw && (ok || v->errors); i++)
        ok &= s->kw[i].def->validate(&s->kw[i], inst, v);
    v->depth--;
    return ok;
}

bool jschema_check_at(jskw_check *v, const char *token, const jschema *s, const json_t *inst)
{
    size_t mark = token ? path_push(v->path, token) : v->path->len;
    bool ok = validate_node(s, inst, v);
    path_pop(v->path, mark);
    return ok;
}

bool jschema_matches(jskw_check *v, const jschema *s, const json_t *inst)
{
    jskw_check quiet = {.errors = NULL, .path = v->path, .depth = v->depth};
    return validate_node(s, inst, &quiet);
}

bool jschema_validate(const jschema *s, const json_t *instance, json_t *errors)
{
    if (!s || !instance)
        return false;
    pathbuf path;
    path_init(&path);
    jskw_check v = {.errors = json_is_array(errors) ? errors : NULL, .path = &path};
    bool ok = validate_node(s, instance, &v);
    free(path.s);
    return ok;
}
