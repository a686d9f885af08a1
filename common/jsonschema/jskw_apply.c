/* jskw_apply.c: the applicator keywords: subschemas applied to members, items or the instance. */
#include "jsonschema/jskeyword.h"

#include "core/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- shapes of keyword values ---- */

/* One subschema: items, contains, not, if, then, else, additionalProperties, propertyNames. */
static bool c_schema(jkw *kw, const json_t *value, jskw_compile *c)
{
    kw->sub = xcalloc(1, sizeof *kw->sub);
    kw->sub[0] = jschema_compile_at(c, NULL, value);
    kw->nsub = kw->sub[0] != NULL;
    return kw->nsub == 1;
}

/* An object of subschemas: properties, $defs, dependentSchemas. */
static bool c_schema_map(jkw *kw, const json_t *value, jskw_compile *c)
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

/* A non-empty array of subschemas: allOf, anyOf, oneOf, prefixItems. */
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
    if (strcmp(kw->def->name, "anyOf") == 0)
        kw->message = xstrdup("must match at least one schema in anyOf");
    else if (strcmp(kw->def->name, "oneOf") == 0)
        kw->message = xstrdup("must match exactly one schema in oneOf");
    return true;
}

/* A non-negative integer (2.0 is one), for minContains and maxContains. */
static bool c_contains_bound(jkw *kw, const json_t *value, jskw_compile *c)
{
    double d = json_number_value(value);
    if (!json_is_number(value) || d < 0 || d > 1e15 || d != (double)(json_int_t)d)
        return jschema_compile_fail(c, "must be a non-negative integer");
    kw->limit = json_is_integer(value) ? json_integer_value(value) : (json_int_t)d;
    return true;
}

/* ---- objects ---- */

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

static bool c_pattern_properties(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!c_schema_map(kw, value, c))
        return false;
    kw->re = xcalloc(kw->nsub, sizeof *kw->re);
    for (size_t i = 0; i < kw->nsub; i++) {
        char why[200];
        kw->re[i] = jsregex_compile(kw->names[i], why, sizeof why);
        if (!kw->re[i])
            return jschema_compile_fail(c, "'%s' is not a valid regular expression: %s",
                                        kw->names[i], why);
        kw->nre++;
    }
    return true;
}

/* Index of the first pattern of a patternProperties keyword that name matches after from, or
 * kw->nre; a search that hits its limit counts as a match, so the member is not "additional". */
static size_t next_pattern(const jkw *kw, const char *name, size_t from)
{
    for (size_t i = from; i < kw->nre; i++)
        if (jsregex_search(kw->re[i], name, strlen(name)) != JSREGEX_NOMATCH)
            return i;
    return kw->nre;
}

static bool v_pattern_properties(const jkw *kw, const json_t *inst, jskw_check *v)
{
    bool ok = true;
    const char *name;
    const json_t *member;
    json_object_foreach((json_t *)inst, name, member)
    {
        for (size_t i = next_pattern(kw, name, 0); i < kw->nre; i = next_pattern(kw, name, i + 1))
            ok &= jschema_check_at(v, name, kw->sub[i], member);
        if (!ok && !jschema_collecting(v))
            break;
    }
    return ok;
}

/* A member is additional when neither properties names it nor a patternProperties key matches. */
static bool v_additional(const jkw *kw, const json_t *inst, jskw_check *v)
{
    const json_t *declared = json_object_get(kw->schema, "properties");
    const jkw *patterns = jschema_sibling(kw, "patternProperties");
    bool ok = true;
    const char *name;
    const json_t *member;
    json_object_foreach((json_t *)inst, name, member)
    {
        if (json_object_get(declared, name) ||
            (patterns && next_pattern(patterns, name, 0) < patterns->nre))
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

/* Each member name, as a string instance, reported at the member's pointer. */
static bool v_property_names(const jkw *kw, const json_t *inst, jskw_check *v)
{
    bool ok = true;
    const char *name;
    const json_t *member;
    json_object_foreach((json_t *)inst, name, member)
    {
        json_t *text = json_string(name);
        ok &= jschema_check_at(v, name, kw->sub[0], text);
        json_decref(text);
        if (!ok && !jschema_collecting(v))
            break;
    }
    return ok;
}

static bool v_dependent_schemas(const jkw *kw, const json_t *inst, jskw_check *v)
{
    bool ok = true;
    for (size_t i = 0; i < kw->nsub && (ok || jschema_collecting(v)); i++)
        if (json_object_get(inst, kw->names[i]))
            ok &= jschema_check_at(v, NULL, kw->sub[i], inst);
    return ok;
}

/* ---- arrays ---- */

/* Applies sub[i] (or sub[0] when one schema covers them all) to items from..to-1. */
static bool check_items(const jkw *kw, const json_t *inst, size_t from, size_t to, bool each,
                        jskw_check *v)
{
    bool ok = true;
    for (size_t i = from; i < to && (ok || jschema_collecting(v)); i++) {
        char index[32];
        snprintf(index, sizeof index, "%zu", i);
        ok &= jschema_check_at(v, index, kw->sub[each ? i : 0], json_array_get(inst, i));
    }
    return ok;
}

static bool v_prefix_items(const jkw *kw, const json_t *inst, jskw_check *v)
{
    size_t n = json_array_size(inst);
    return check_items(kw, inst, 0, n < kw->nsub ? n : kw->nsub, true, v);
}

/* items covers what prefixItems leaves: every item after the prefix. */
static bool v_items(const jkw *kw, const json_t *inst, jskw_check *v)
{
    const jkw *prefix = jschema_sibling(kw, "prefixItems");
    size_t from = prefix ? prefix->nsub : 0, n = json_array_size(inst);
    if (from >= n)
        return true;
    if (jschema_is_false(kw->sub[0])) {
        char msg[96];
        snprintf(msg, sizeof msg, "must have at most %zu items", from);
        return jschema_fail(v, "items", msg);
    }
    return check_items(kw, inst, from, n, false, v);
}

/* contains, bounded by minContains (default 1) and maxContains (default unbounded). */
static bool v_contains(const jkw *kw, const json_t *inst, jskw_check *v)
{
    if (!json_is_array(inst))
        return true;
    const jkw *min = jschema_sibling(kw, "minContains"), *max = jschema_sibling(kw, "maxContains");
    json_int_t lo = min ? min->limit : 1, n = 0;
    for (size_t i = 0; i < json_array_size(inst); i++)
        n += jschema_matches(v, kw->sub[0], json_array_get(inst, i));
    char msg[96];
    if (n < lo) {
        snprintf(msg, sizeof msg, "must contain at least %lld matching items", (long long)lo);
        return jschema_fail(v, "contains", msg);
    }
    if (max && n > max->limit) {
        snprintf(msg, sizeof msg, "must contain at most %lld matching items",
                 (long long)max->limit);
        return jschema_fail(v, "contains", msg);
    }
    return true;
}

/* ---- in place: the instance itself ---- */

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

/* if decides whether then or else applies; either may be absent. */
static bool v_if(const jkw *kw, const json_t *inst, jskw_check *v)
{
    const jkw *next = jschema_sibling(kw, jschema_matches(v, kw->sub[0], inst) ? "then" : "else");
    return next ? jschema_check_at(v, NULL, next->sub[0], inst) : true;
}

static bool c_ref(jkw *kw, const json_t *value, jskw_compile *c)
{
    if (!json_is_string(value))
        return jschema_compile_fail(c, "must be a string");
    kw->sub = xcalloc(1, sizeof *kw->sub);
    kw->sub[0] = jschema_resolve_ref(c, json_string_value(value));
    kw->nsub = kw->sub[0] != NULL;
    return kw->nsub == 1;
}

static bool v_ref(const jkw *kw, const json_t *inst, jskw_check *v)
{
    return jschema_check_at(v, NULL, kw->sub[0], inst);
}

const jskeyword jskw_apply_keywords[] = {
    {"prefixItems", c_schema_array, v_prefix_items},
    {"items", c_schema, v_items},
    {"contains", c_schema, v_contains},
    {"minContains", c_contains_bound, jskw_pass},
    {"maxContains", c_contains_bound, jskw_pass},
    {"properties", c_schema_map, v_properties},
    {"patternProperties", c_pattern_properties, v_pattern_properties},
    {"additionalProperties", c_schema, v_additional},
    {"propertyNames", c_schema, v_property_names},
    {"dependentSchemas", c_schema_map, v_dependent_schemas},
    {"allOf", c_schema_array, v_all_of},
    {"anyOf", c_schema_array, v_any_of},
    {"oneOf", c_schema_array, v_one_of},
    {"not", c_schema, v_not},
    {"if", c_schema, v_if},
    {"then", c_schema, jskw_pass},
    {"else", c_schema, jskw_pass},
    {"$ref", c_ref, v_ref},
    {"$defs", c_schema_map, jskw_pass},
};
const size_t jskw_apply_count = sizeof jskw_apply_keywords / sizeof jskw_apply_keywords[0];
