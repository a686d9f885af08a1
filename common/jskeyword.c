/* jskeyword.c: the JSON Schema keywords the validator supports, as one table of rows. */
#include "jskeyword.h"

#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Instance types as bits; an integral number carries both NUMBER and INTEGER. */
enum {
    T_NULL = 1u << 0,
    T_BOOLEAN = 1u << 1,
    T_OBJECT = 1u << 2,
    T_ARRAY = 1u << 3,
    T_NUMBER = 1u << 4,
    T_STRING = 1u << 5,
    T_INTEGER = 1u << 6,
};

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", T_NULL},     {"boolean", T_BOOLEAN}, {"object", T_OBJECT},   {"array", T_ARRAY},
    {"number", T_NUMBER}, {"string", T_STRING},   {"integer", T_INTEGER},
};

static unsigned type_of(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_NULL:
        return T_NULL;
    case JSON_TRUE:
    case JSON_FALSE:
        return T_BOOLEAN;
    case JSON_OBJECT:
        return T_OBJECT;
    case JSON_ARRAY:
        return T_ARRAY;
    case JSON_STRING:
        return T_STRING;
    case JSON_INTEGER:
        return T_NUMBER | T_INTEGER;
    case JSON_REAL: {
        /* "integer" means zero fractional part, so 1.0 is an integer too. */
        double d = json_real_value(j);
        return isfinite(d) && d == trunc(d) ? T_NUMBER | T_INTEGER : T_NUMBER;
    }
    }
    return 0;
}

/* Compact JSON text of a value for messages; caller frees. */
static char *dump(const json_t *j)
{
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    return s ? s : xstrdup("?");
}

/* Number of Unicode code points in UTF-8 text (jansson guarantees valid UTF-8). */
static size_t utf8_count(const char *s, size_t bytes)
{
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* True for the "min" member of a min/max pair (minimum, minLength, minItems). */
static bool is_min(const jkw *kw)
{
    return strncmp(kw->def->name, "min", 3) == 0;
}

/* ---- type, enum, const ---- */

static bool c_type(jkw *kw, const json_t *value, jskw_compile *c)
{
    size_t n = json_is_array(value) ? json_array_size(value) : 1;
    if (!json_is_string(value) && !(json_is_array(value) && n > 0))
        return jschema_compile_fail(c, "must be a string or a non-empty array of strings");
    char msg[160] = "must be of type ";
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_is_array(value) ? json_array_get(value, i) : value;
        const char *name = json_string_value(t);
        unsigned bit = 0;
        for (size_t k = 0; name && k < sizeof type_names / sizeof type_names[0]; k++)
            if (strcmp(name, type_names[k].name) == 0)
                bit = type_names[k].bit;
        if (!bit)
            return jschema_compile_fail(c, "unknown type %s", name ? name : "(not a string)");
        if (kw->types & bit)
            return jschema_compile_fail(c, "type '%s' is listed twice", name);
        kw->types |= bit;
        /* At most seven distinct names: msg is large enough, snprintf keeps that checked. */
        size_t used = strlen(msg);
        snprintf(msg + used, sizeof(msg) - used, "%s%s",
                 i == 0       ? ""
                 : i + 1 == n ? " or "
                              : ", ",
                 name);
    }
    kw->message = xstrdup(msg);
    return true;
}

static bool v_type(const jkw *kw, const json_t *inst, jskw_check *v)
{
    return (type_of(inst) & kw->types) ? true : jschema_fail(v, "type", kw->message);
}

static bool c_enum(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_array(value) || json_array_size(value) == 0)
        return jschema_compile_fail(c, "must be a non-empty array");
    char *text = dump(value);
    kw->message = xasprintf("must be one of %s", text);
    free(text);
    return true;
}

static bool v_enum(const jkw *kw, const json_t *inst, jskw_check *v)
{
    for (size_t i = 0; i < json_array_size(kw->value); i++)
        if (jschema_equal(inst, json_array_get(kw->value, i)))
            return true;
    return jschema_fail(v, "enum", kw->message);
}

static bool c_const(jkw *kw, const json_t *value, jskw_compile *c)
{
    (void)c;
    char *text = dump(value);
    kw->message = xasprintf("must equal %s", text);
    free(text);
    return true;
}

static bool v_const(const jkw *kw, const json_t *inst, jskw_check *v)
{
    return jschema_equal(inst, kw->value) ? true : jschema_fail(v, "const", kw->message);
}

/* ---- numbers ---- */

/* Comparison operator of a numeric bound keyword, as written in its message. */
static const char *bound_op(const char *name)
{
    if (strcmp(name, "minimum") == 0)
        return ">=";
    if (strcmp(name, "maximum") == 0)
        return "<=";
    if (strcmp(name, "exclusiveMinimum") == 0)
        return ">";
    return "<";
}

static bool c_bound(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_number(value) || !isfinite(json_number_value(value)))
        return jschema_compile_fail(c, "must be a number");
    char *text = dump(value);
    kw->message = xasprintf("must be %s %s", bound_op(kw->def->name), text);
    free(text);
    return true;
}

static bool v_bound(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_number(inst))
        return true;
    int cmp = jschema_num_cmp(inst, kw->value);
    const char *op = bound_op(kw->def->name);
    bool ok = op[0] == '>' ? (op[1] ? cmp >= 0 : cmp > 0) : (op[1] ? cmp <= 0 : cmp < 0);
    return ok ? true : jschema_fail(v, kw->def->name, kw->message);
}

/* ---- strings ---- */

/* minLength, maxLength, minItems, maxItems: a non-negative integer. */
static bool c_count(jkw *kw, const json_t *value, jskw_compile *c)
{
    double d = json_number_value(value);
    if (!(type_of(value) & T_INTEGER) || d < 0 || d > 1e15)
        return jschema_compile_fail(c, "must be a non-negative integer");
    kw->limit = json_is_integer(value) ? json_integer_value(value) : (json_int_t)d;
    bool chars = strstr(kw->def->name, "Length") != NULL;
    kw->message = xasprintf("must have %s %lld %s", is_min(kw) ? "at least" : "at most",
                            (long long)kw->limit, chars ? "characters" : "items");
    return true;
}

static bool v_length(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_string(inst))
        return true;
    json_int_t n = (json_int_t)utf8_count(json_string_value(inst), json_string_length(inst));
    bool ok = is_min(kw) ? n >= kw->limit : n <= kw->limit;
    return ok ? true : jschema_fail(v, kw->def->name, kw->message);
}

static bool c_pattern(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_string(value))
        return jschema_compile_fail(c, "must be a string");
    kw->re = xmalloc(sizeof *kw->re);
    int rc = regcomp(kw->re, json_string_value(value), REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[128];
        regerror(rc, kw->re, why, sizeof why);
        free(kw->re);
        kw->re = NULL;
        return jschema_compile_fail(c, "not a POSIX extended regex: %s", why);
    }
    kw->message = xasprintf("must match the pattern %s", json_string_value(value));
    return true;
}

static bool v_pattern(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_string(inst) || regexec(kw->re, json_string_value(inst), 0, NULL, 0) == 0)
        return true;
    return jschema_fail(v, "pattern", kw->message);
}

/* ---- arrays ---- */

/* items, not, additionalProperties: one subschema. */
static bool c_schema(jkw *kw, const json_t *value, jskw_compile *c)
{
    kw->sub = xcalloc(1, sizeof *kw->sub);
    kw->sub[0] = jschema_compile_at(c, NULL, value);
    kw->nsub = kw->sub[0] != NULL;
    return kw->nsub == 1;
}

static bool v_items(const jkw *kw, const json_t *inst, jskw_check *v)
{
    bool ok = true;
    for (size_t i = 0; i < json_array_size(inst) && (ok || jschema_collecting(v)); i++) {
        char index[32];
        snprintf(index, sizeof index, "%zu", i);
        ok &= jschema_check_at(v, index, kw->sub[0], json_array_get(inst, i));
    }
    return ok;
}

static bool v_count_items(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_array(inst))
        return true;
    json_int_t n = (json_int_t)json_array_size(inst);
    bool ok = is_min(kw) ? n >= kw->limit : n <= kw->limit;
    return ok ? true : jschema_fail(v, kw->def->name, kw->message);
}

/* ---- objects ---- */

static bool c_required(jkw *kw, const json_t *value, jskw_compile *c)
{
    (void)kw;
    if (!json_is_array(value))
        return jschema_compile_fail(c, "must be an array of strings");
    for (size_t i = 0; i < json_array_size(value); i++) {
        const char *name = json_string_value(json_array_get(value, i));
        if (!name)
            return jschema_compile_fail(c, "must be an array of strings");
        for (size_t k = 0; k < i; k++)
            if (strcmp(name, json_string_value(json_array_get(value, k))) == 0)
                return jschema_compile_fail(c, "lists '%s' twice", name);
    }
    return true;
}

/* A missing member is reported at its own pointer, so a client can show it by the field. */
static bool v_required(const jkw *kw, const json_t *inst, jskw_check *v)
{
    bool ok = true;
    for (size_t i = 0; json_is_object(inst) && i < json_array_size(kw->value); i++) {
        const char *name = json_string_value(json_array_get(kw->value, i));
        if (!json_object_get(inst, name)) {
            ok = jschema_fail_at(v, name, "required", "is required");
            if (!jschema_collecting(v))
                break;
        }
    }
    return ok;
}

static bool c_properties(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_object(value))
        return jschema_compile_fail(c, "must be an object of schemas");
    kw->sub = xcalloc(json_object_size(value), sizeof *kw->sub);
    kw->names = xcalloc(json_object_size(value), sizeof *kw->names);
    const char *name;
    const json_t *sub;
    json_object_foreach((json_t *)value, name, sub)
    {
        jschema *s = jschema_compile_at(c, name, sub);
        if (!s)
            return false;
        kw->names[kw->nsub] = name;
        kw->sub[kw->nsub++] = s;
    }
    return true;
}

static bool v_properties(const jkw *kw, const json_t *inst, jskw_check *v)
{
    bool ok = true;
    for (size_t i = 0; i < kw->nsub && (ok || jschema_collecting(v)); i++) {
        const json_t *member = json_object_get(inst, kw->names[i]);
        if (member)
            ok &= jschema_check_at(v, kw->names[i], kw->sub[i], member);
    }
    return ok;
}

static bool v_additional(const jkw *kw, const json_t *inst, jskw_check *v)
{
    const json_t *declared = json_object_get(kw->schema, "properties");
    bool ok = true;
    const char *name;
    const json_t *member;
    json_object_foreach((json_t *)inst, name, member)
    {
        if (json_object_get(declared, name))
            continue;
        /* A false subschema reads better as "is not allowed" under this keyword. */
        if (jschema_is_false(kw->sub[0]))
            ok = jschema_fail_at(v, name, "additionalProperties", "is not allowed");
        else
            ok &= jschema_check_at(v, name, kw->sub[0], member);
        if (!ok && !jschema_collecting(v))
            break;
    }
    return ok;
}

/* ---- combinators ---- */

/* allOf, anyOf, oneOf: a non-empty array of subschemas. */
static bool c_schema_array(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_array(value) || json_array_size(value) == 0)
        return jschema_compile_fail(c, "must be a non-empty array of schemas");
    kw->sub = xcalloc(json_array_size(value), sizeof *kw->sub);
    for (size_t i = 0; i < json_array_size(value); i++) {
        char index[32];
        snprintf(index, sizeof index, "%zu", i);
        kw->sub[i] = jschema_compile_at(c, index, json_array_get(value, i));
        if (!kw->sub[i])
            return false;
        kw->nsub++;
    }
    kw->message = strcmp(kw->def->name, "anyOf") == 0
                      ? xstrdup("must match at least one schema in anyOf")
                      : xstrdup("must match exactly one schema in oneOf");
    return true;
}

static bool v_all_of(const jkw *kw, const json_t *inst, jskw_check *v)
{
    bool ok = true;
    for (size_t i = 0; i < kw->nsub && (ok || jschema_collecting(v)); i++)
        ok &= jschema_check_at(v, NULL, kw->sub[i], inst);
    return ok;
}

/* Number of subschemas inst satisfies, stopping once it exceeds stop. */
static size_t count_matches(const jkw *kw, const json_t *inst, jskw_check *v, size_t stop)
{
    size_t n = 0;
    for (size_t i = 0; i < kw->nsub && n <= stop; i++)
        n += jschema_matches(v, kw->sub[i], inst);
    return n;
}

static bool v_any_of(const jkw *kw, const json_t *inst, jskw_check *v)
{
    return count_matches(kw, inst, v, 0) >= 1 ? true : jschema_fail(v, "anyOf", kw->message);
}

static bool v_one_of(const jkw *kw, const json_t *inst, jskw_check *v)
{
    return count_matches(kw, inst, v, 1) == 1 ? true : jschema_fail(v, "oneOf", kw->message);
}

static bool v_not(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!jschema_matches(v, kw->sub[0], inst))
        return true;
    return jschema_fail(v, "not", "must not match the schema in not");
}

/*
 * The table. Keywords are evaluated in this order, whatever their order in the schema, so error
 * lists are stable. Rows with a NULL compile are annotations: accepted, never evaluated.
 */
static const jskeyword keywords[] = {
    {"type", c_type, v_type},
    {"enum", c_enum, v_enum},
    {"const", c_const, v_const},
    {"minimum", c_bound, v_bound},
    {"maximum", c_bound, v_bound},
    {"exclusiveMinimum", c_bound, v_bound},
    {"exclusiveMaximum", c_bound, v_bound},
    {"minLength", c_count, v_length},
    {"maxLength", c_count, v_length},
    {"pattern", c_pattern, v_pattern},
    {"items", c_schema, v_items},
    {"minItems", c_count, v_count_items},
    {"maxItems", c_count, v_count_items},
    {"required", c_required, v_required},
    {"properties", c_properties, v_properties},
    {"additionalProperties", c_schema, v_additional},
    {"allOf", c_schema_array, v_all_of},
    {"anyOf", c_schema_array, v_any_of},
    {"oneOf", c_schema_array, v_one_of},
    {"not", c_schema, v_not},
    {"$schema", NULL, NULL},
    {"$id", NULL, NULL},
    {"title", NULL, NULL},
    {"description", NULL, NULL},
    {"$comment", NULL, NULL},
    {"examples", NULL, NULL},
    {"default", NULL, NULL},
};

const jskeyword *jskeyword_find(const char *name)
{
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
        if (strcmp(keywords[i].name, name) == 0)
            return &keywords[i];
    return NULL;
}

const jskeyword *jskeyword_at(size_t i)
{
    return i < sizeof keywords / sizeof keywords[0] ? &keywords[i] : NULL;
}
