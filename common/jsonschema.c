/* jsonschema.c: the validator core: compiles schemas into keyword trees and walks them. */
#include "jsonschema.h"

#include "jskeyword.h"
#include "xalloc.h"

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
    pathbuf path; /* pointer into the schema */
};

struct jskw_check {
    json_t *errors; /* NULL when only the verdict matters: stop at the first failure */
    pathbuf *path;  /* pointer into the instance */
};

struct jschema {
    json_t *doc; /* root only: the copy of the schema every keyword value points into */
    int boolean; /* 0 or 1 for a boolean schema, -1 for an object schema */
    size_t nkw;
    jkw *kw;
};

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
    if (!s)
        return;
    for (size_t i = 0; i < s->nkw; i++) {
        jkw *kw = &s->kw[i];
        for (size_t k = 0; k < kw->nsub; k++)
            free_node(kw->sub[k]);
        free(kw->sub);
        free(kw->names);
        if (kw->re) {
            regfree(kw->re);
            free(kw->re);
        }
        free(kw->message);
    }
    free(s->kw);
    json_decref(s->doc);
    free(s);
}

static jschema *compile_node(const json_t *schema, jskw_compile *c)
{
    if (!json_is_boolean(schema) && !json_is_object(schema)) {
        jschema_compile_fail(c, "a schema must be an object or a boolean");
        return NULL;
    }
    jschema *s = xcalloc(1, sizeof *s);
    s->boolean = json_is_boolean(schema) ? json_is_true(schema) : -1;
    if (s->boolean >= 0)
        return s;
    /* Refuse unknown keywords first: a misspelt keyword must never be silently ignored. */
    const char *name;
    const json_t *value;
    json_object_foreach((json_t *)schema, name, value)
    {
        if (!jskeyword_find(name)) {
            size_t mark = path_push(&c->path, name);
            snprintf(c->err, c->errlen, "unsupported keyword '%s' at %s", name, c->path.s);
            path_pop(&c->path, mark);
            free(s);
            return NULL;
        }
    }
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
        size_t mark = path_push(&c->path, def->name);
        bool ok = def->compile(kw, value, c);
        path_pop(&c->path, mark);
        if (!ok) {
            free_node(s);
            return NULL;
        }
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
    path_init(&c.path);
    jschema *s = compile_node(doc, &c);
    free(c.path.s);
    if (!s) {
        json_decref(doc);
        return NULL;
    }
    s->doc = doc;
    return s;
}

void jschema_free(jschema *s)
{
    free_node(s);
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
    bool ok = true;
    for (size_t i = 0; i < s->nkw && (ok || v->errors); i++)
        ok &= s->kw[i].def->validate(&s->kw[i], inst, v);
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
    jskw_check quiet = {.errors = NULL, .path = v->path};
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
