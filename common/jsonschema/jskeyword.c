/* jskeyword.c: the keyword table, and the assertion keywords (applicators are in jskw_apply.c). */
#include "jsonschema/jskeyword.h"

#include "core/xalloc.h"

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

static bool c_multiple(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_number(value) || !(json_number_value(value) > 0) ||
        !isfinite(json_number_value(value)))
        return jschema_compile_fail(c, "must be a number greater than 0");
    char *text = dump(value);
    kw->message = xasprintf("must be a multiple of %s", text);
    free(text);
    return true;
}

/*
 * Exact for two integers. Otherwise the quotient must be integral: within 1e-9 of a whole
 * number, as binary floating point cannot hold most decimal divisors (0.0075 / 0.0001 is
 * 75.00000000000001). Where the quotient overflows (1e308 / 0.5), fmod() decides: it is exact.
 */
static bool v_multiple(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_number(inst))
        return true;
    bool ok;
    if (json_is_integer(inst) && json_is_integer(kw->value)) {
        ok = json_integer_value(inst) % json_integer_value(kw->value) == 0;
    } else {
        double x = json_number_value(inst), m = json_number_value(kw->value), q = x / m;
        ok = isfinite(q) ? fabs(q - nearbyint(q)) < 1e-9 : fmod(x, m) == 0;
    }
    return ok ? true : jschema_fail(v, "multipleOf", kw->message);
}

/* ---- strings ---- */

/* minLength, maxLength, minItems, maxItems: a non-negative integer. */
static bool c_count(jkw *kw, const json_t *value, jskw_compile *c)
{
    double d = json_number_value(value);
    if (!(type_of(value) & T_INTEGER) || d < 0 || d > 1e15)
        return jschema_compile_fail(c, "must be a non-negative integer");
    kw->limit = json_is_integer(value) ? json_integer_value(value) : (json_int_t)d;
    const char *unit = strstr(kw->def->name, "Length")       ? "characters"
                       : strstr(kw->def->name, "Properties") ? "members"
                                                             : "items";
    kw->message = xasprintf("must have %s %lld %s", is_min(kw) ? "at least" : "at most",
                            (long long)kw->limit, unit);
    kw->types = strstr(kw->def->name, "Items") ? T_ARRAY : T_OBJECT; /* what v_count() counts */
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
    char why[200];
    kw->re = xcalloc(1, sizeof *kw->re);
    kw->re[0] = jsregex_compile(json_string_value(value), why, sizeof why);
    if (!kw->re[0])
        return jschema_compile_fail(c, "not a valid regular expression: %s", why);
    kw->nre = 1;
    kw->message = xasprintf("must match the pattern %s", json_string_value(value));
    return true;
}

static bool v_pattern(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_string(inst) || jsregex_search(kw->re[0], json_string_value(inst),
                                                json_string_length(inst)) == JSREGEX_MATCH)
        return true;
    return jschema_fail(v, "pattern", kw->message);
}

static bool c_format(jkw *kw, const json_t *value, jskw_compile *c)
{
    const char *name = json_string_value(value);
    if (!name)
        return jschema_compile_fail(c, "must be a string");
    kw->format = jsformat_find(name);
    if (!kw->format)
        return jschema_compile_fail(c,
                                    "format '%s' is not supported (supported: date-time, "
                                    "date, time, uuid, email)",
                                    name);
    kw->message = xasprintf("must be a valid %s", name);
    return true;
}

static bool v_format(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_string(inst) || kw->format(json_string_value(inst), json_string_length(inst)))
        return true;
    return jschema_fail(v, "format", kw->message);
}

/* ---- arrays ---- */

/* minItems, maxItems, minProperties, maxProperties: c_count() set the instance type counted. */
static bool v_count(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!(type_of(inst) & kw->types))
        return true;
    json_int_t n =
        (json_int_t)(json_is_array(inst) ? json_array_size(inst) : json_object_size(inst));
    bool ok = is_min(kw) ? n >= kw->limit : n <= kw->limit;
    return ok ? true : jschema_fail(v, kw->def->name, kw->message);
}

static bool c_unique(jkw *kw, const json_t *value, jskw_compile *c)
{
    (void)kw;
    return json_is_boolean(value) ? true : jschema_compile_fail(c, "must be a boolean");
}

/* Quadratic, like the definition: arrays in commands are short, and equality is deep. */
static bool v_unique(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_true(kw->value) || !json_is_array(inst))
        return true;
    for (size_t i = 1; i < json_array_size(inst); i++) {
        for (size_t k = 0; k < i; k++) {
            if (jschema_equal(json_array_get(inst, i), json_array_get(inst, k))) {
                char msg[96];
                snprintf(msg, sizeof msg,
                         "must not contain duplicates: items %zu and %zu are equal", k, i);
                return jschema_fail(v, "uniqueItems", msg);
            }
        }
    }
    return true;
}

/* ---- objects ---- */

/* An array of distinct strings (required, and each list of dependentRequired). */
static bool string_set(const json_t *value, jskw_compile *c)
{
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

static bool c_required(jkw *kw, const json_t *value, jskw_compile *c)
{
    (void)kw;
    return string_set(value, c);
}

/* Members of names that inst lacks, each reported at its own pointer so a client can show it by
 * the field; message says why. */
static bool check_present(const json_t *names, const json_t *inst, const char *keyword,
                          const char *message, jskw_check *v)
{
    bool ok = true;
    for (size_t i = 0; i < json_array_size(names); i++) {
        const char *name = json_string_value(json_array_get(names, i));
        if (!json_object_get(inst, name)) {
            ok = jschema_fail_at(v, name, keyword, message);
            if (!jschema_collecting(v))
                break;
        }
    }
    return ok;
}

static bool v_required(const jkw *kw, const json_t *inst, jskw_check *v)
{
    return !json_is_object(inst) || check_present(kw->value, inst, "required", "is required", v);
}

static bool c_dependent_required(jkw *kw, const json_t *value, jskw_compile *c)
{
    (void)kw;
    if (!json_is_object(value))
        return jschema_compile_fail(c, "must be an object of string arrays");
    const char *name;
    const json_t *list;
    json_object_foreach((json_t *)value, name, list)
    {
        if (!string_set(list, c))
            return false;
    }
    return true;
}

static bool v_dependent_required(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_object(inst))
        return true;
    bool ok = true;
    const char *name;
    const json_t *list;
    json_object_foreach((json_t *)kw->value, name, list)
    {
        if (!json_object_get(inst, name))
            continue;
        char msg[160];
        snprintf(msg, sizeof msg, "is required when '%.100s' is present", name);
        ok &= check_present(list, inst, "dependentRequired", msg, v);
        if (!ok && !jschema_collecting(v))
            break;
    }
    return ok;
}

/* ---- identification ---- */

/* $schema: only this draft's meta-schema, whose semantics the validator implements. */
static bool c_dialect(jkw *kw, const json_t *value, jskw_compile *c)
{
    (void)kw;
    const char *uri = json_string_value(value);
    if (uri && (strcmp(uri, "https://json-schema.org/draft/2020-12/schema") == 0 ||
                strcmp(uri, "https://json-schema.org/draft/2020-12/schema#") == 0))
        return true;
    return jschema_compile_fail(c, "only draft 2020-12 "
                                   "(https://json-schema.org/draft/2020-12/schema) is supported");
}

/* $id names the document; below the root it would start an embedded resource with a base URI
 * of its own, which references here do not resolve against. */
static bool c_id(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_string(value))
        return jschema_compile_fail(c, "must be a string");
    if (!jschema_is_root(c, kw))
        return jschema_compile_fail(c, "$id below the root (an embedded schema resource) is not "
                                       "supported");
    return true;
}

/* Keywords whose work is done by a sibling (then, else, minContains...) or only at compile time
 * ($defs, $id, $schema). */
bool jskw_pass(const jkw *kw, const json_t *inst, jskw_check *v)
{
    (void)kw;
    (void)inst;
    (void)v;
    return true;
}

/*
 * The assertions, in evaluation order, then the applicators of jskw_apply.c. Keywords are
 * evaluated in table order whatever their order in the schema, so error lists are stable. Rows
 * with a NULL compile are annotations: accepted, never evaluated.
 */
static const jskeyword keywords[] = {
    {"type", c_type, v_type},
    {"enum", c_enum, v_enum},
    {"const", c_const, v_const},
    {"minimum", c_bound, v_bound},
    {"maximum", c_bound, v_bound},
    {"exclusiveMinimum", c_bound, v_bound},
    {"exclusiveMaximum", c_bound, v_bound},
    {"multipleOf", c_multiple, v_multiple},
    {"minLength", c_count, v_length},
    {"maxLength", c_count, v_length},
    {"pattern", c_pattern, v_pattern},
    {"format", c_format, v_format},
    {"minItems", c_count, v_count},
    {"maxItems", c_count, v_count},
    {"uniqueItems", c_unique, v_unique},
    {"required", c_required, v_required},
    {"dependentRequired", c_dependent_required, v_dependent_required},
    {"minProperties", c_count, v_count},
    {"maxProperties", c_count, v_count},
    {"$schema", c_dialect, jskw_pass},
    {"$id", c_id, jskw_pass},
    {"title", NULL, NULL},
    {"description", NULL, NULL},
    {"$comment", NULL, NULL},
    {"examples", NULL, NULL},
    {"default", NULL, NULL},
    {"deprecated", NULL, NULL},
    {"readOnly", NULL, NULL},
    {"writeOnly", NULL, NULL},
};
#define NKEYWORDS (sizeof keywords / sizeof keywords[0])

const jskeyword *jskeyword_find(const char *name)
{
    const jskeyword *k;
    for (size_t i = 0; (k = jskeyword_at(i)) != NULL; i++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

const jskeyword *jskeyword_at(size_t i)
{
    if (i < NKEYWORDS)
        return &keywords[i];
    return i - NKEYWORDS < jskw_apply_count ? &jskw_apply_keywords[i - NKEYWORDS] : NULL;
}
