/*
 * test_openapi.c: the OpenAPI document against the gateway's route table (both ways), the
 * domain registry (every command in the oneOf with its payload schema, every aggregate with its
 * state schema) and docs/openapi.json; and the rewriting of local $refs. Needs neither
 * PostgreSQL nor Kafka: it links the gateway's modules and runs the built binary once.
 */
#include "checkrun.h"
#include "domain/domain.h"
#include "routes.h"
#include "openapi.h"
#include "openapi_schemas.h"
#include "jtext.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static domain_registry *reg; /* the shipped domains */
static json_t *doc;          /* openapi_build(reg) */
static const gateway_route *routes;
static size_t nroutes;

/* The OpenAPI name of each method a route may list: every http_method but HTTP_OTHER. */
static const char *const method_names[] = {
    [HTTP_GET] = "get", [HTTP_HEAD] = "head",   [HTTP_POST] = "post",
    [HTTP_PUT] = "put", [HTTP_PATCH] = "patch", [HTTP_DELETE] = "delete",
};

static const char *schemas_dir(void)
{
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    return dir && *dir ? dir : "schemas/domains";
}

/*
 * What a local "$ref" such as "#/components/schemas/X" names in d; NULL when nothing. The
 * document's names hold no '~' or '/', so its pointers need no unescaping.
 */
static const json_t *resolve(const json_t *d, const char *ref)
{
    if (strncmp(ref, "#/", 2) != 0 || strchr(ref, '~'))
        return NULL;
    char *copy = strdup(ref + 2), *save = NULL;
    const json_t *at = d;
    for (char *tok = strtok_r(copy, "/", &save); tok && at; tok = strtok_r(NULL, "/", &save))
        at = json_object_get(at, tok);
    free(copy);
    return at;
}

static const json_t *schema(const char *prefix, const char *name)
{
    char *key = NULL;
    ck_assert_int_ge(asprintf(&key, "%s%s", prefix, name), 0);
    const json_t *s =
        json_object_get(json_object_get(json_object_get(doc, "components"), "schemas"), key);
    ck_assert_msg(s != NULL, "components/schemas/%s missing", key);
    free(key);
    return s;
}

/* Writes the first place where a and b differ (a JSON pointer) into buf. */
static void first_difference(const json_t *a, const json_t *b, char *buf, size_t len)
{
    if (json_is_object(a) && json_is_object(b)) {
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)a, key, v)
        {
            if (!json_equal(v, json_object_get(b, key))) {
                size_t n = strlen(buf);
                snprintf(buf + n, len - n, "/%s", key);
                if (json_object_get(b, key))
                    first_difference(v, json_object_get(b, key), buf, len);
                return;
            }
        }
        json_object_foreach((json_t *)b, key, v)
        {
            if (!json_object_get(a, key)) {
                size_t n = strlen(buf);
                snprintf(buf + n, len - n, "/%s (only in the second)", key);
                return;
            }
        }
    }
}

/* ---- the route table and the paths of the document, both ways ---- */

START_TEST(test_method_names_complete)
{
    /* A method added to http_method must get a name here, or routes with it go unchecked. */
    ck_assert_int_eq(N(method_names), HTTP_OTHER);
    for (int m = 0; m < N(method_names); m++)
        ck_assert_ptr_nonnull(method_names[m]);
    ck_assert_uint_ge(nroutes, 7);
}
END_TEST

/* Each row: its path is documented with every method it serves and no other, with its {params}. */
START_TEST(test_route_documented)
{
    const gateway_route *r = &routes[_i];
    const json_t *item = json_object_get(json_object_get(doc, "paths"), r->path);
    ck_assert_msg(item != NULL, "route %s is not in the document's paths", r->path);
    ck_assert_msg(r->methods >> HTTP_OTHER == 0, "route %s serves an unnamed method", r->path);
    unsigned documented = 0;
    for (int m = 0; m < N(method_names); m++) {
        const json_t *op = json_object_get(item, method_names[m]);
        bool served = r->methods & GATEWAY_METHOD(m);
        ck_assert_msg(!served || json_is_object(json_object_get(op, "responses")),
                      "%s %s is served but not documented", method_names[m], r->path);
        ck_assert_msg(served || !op, "%s %s is documented but not served", method_names[m],
                      r->path);
        documented += served;
    }
    ck_assert_uint_ge(documented, 1);

    /* Every {name} of the template is a required path parameter of the path item. */
    const json_t *params = json_object_get(item, "parameters");
    size_t nparams = 0, nsegments = 0;
    for (const char *p = r->path; (p = strchr(p, '/')) != NULL; p++) {
        nsegments++;
        if (p[1] != '{')
            continue;
        size_t len = strcspn(p + 2, "}");
        bool found = false;
        size_t i;
        const json_t *prm;
        json_array_foreach(params, i, prm)
        {
            const char *name = json_string_value(json_object_get(prm, "name"));
            found |= name && strlen(name) == len && strncmp(name, p + 2, len) == 0 &&
                     json_is_true(json_object_get(prm, "required")) &&
                     strcmp(json_string_value(json_object_get(prm, "in")), "path") == 0;
        }
        ck_assert_msg(found, "%s: {%.*s} is not a documented path parameter", r->path, (int)len,
                      p + 2);
        nparams++;
    }
    ck_assert_uint_eq(json_array_size(params), nparams);
    /* routes_dispatch() splits at most 8 segments and captures GATEWAY_MAX_PARAMS. */
    ck_assert_uint_lt(nsegments, 8);
    ck_assert_uint_le(nparams, GATEWAY_MAX_PARAMS);
}
END_TEST

/* Each documented operation is served by a row of the table; nothing else is in a path item. */
START_TEST(test_documented_routes_served)
{
    const char *path, *key;
    const json_t *item, *v;
    size_t ops = 0;
    json_object_foreach(json_object_get(doc, "paths"), path, item)
    {
        const gateway_route *r = NULL;
        for (size_t i = 0; i < nroutes && !r; i++)
            if (strcmp(routes[i].path, path) == 0)
                r = &routes[i];
        ck_assert_msg(r != NULL, "documented path %s is not in the route table", path);
        json_object_foreach((json_t *)item, key, v)
        {
            if (strcmp(key, "parameters") == 0)
                continue;
            int m = 0;
            while (m < N(method_names) && strcmp(method_names[m], key) != 0)
                m++;
            ck_assert_msg(m < N(method_names), "%s: documents '%s', which no route serves", path,
                          key);
            ck_assert_msg(r->methods & GATEWAY_METHOD(m), "%s %s is documented but not served", key,
                          path);
            ops++;
        }
    }
    size_t served = 0;
    for (size_t i = 0; i < nroutes; i++)
        served += (size_t)__builtin_popcount(routes[i].methods);
    ck_assert_uint_eq(ops, served);
}
END_TEST

/* ---- the domains in the document ---- */

/* Each command: in the request oneOf and the discriminator, with its type and payload schema. */
START_TEST(test_command_in_request)
{
    const domain_command *c = domain_registry_command_at(reg, (size_t)_i);
    const char *type = domain_command_type(c);
    const json_t *request = schema("", "CommandRequest");
    char *ref = NULL;
    ck_assert_int_ge(asprintf(&ref, OPENAPI_SCHEMAS OPENAPI_COMMAND_PREFIX "%s", type), 0);
    size_t i, hits = 0;
    const json_t *alt;
    json_array_foreach(json_object_get(request, "oneOf"), i, alt)
    {
        hits += strcmp(json_string_value(json_object_get(alt, "$ref")), ref) == 0;
    }
    ck_assert_msg(hits == 1, "%s is %zu times in CommandRequest.oneOf", ref, hits);
    const json_t *disc = json_object_get(request, "discriminator");
    ck_assert_str_eq(json_string_value(json_object_get(disc, "propertyName")), "type");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(disc, "mapping"), type)),
                     ref);

    const json_t *cmd = resolve(doc, ref);
    ck_assert_ptr_nonnull(cmd);
    const json_t *props = json_object_get(cmd, "properties");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(props, "type"), "const")),
                     type);
    ck_assert(json_is_false(json_object_get(cmd, "additionalProperties")));
    /* The payload member points at the domain file's schema, embedded as written. */
    const char *pref =
        json_string_value(json_object_get(json_object_get(props, "payload"), "$ref"));
    ck_assert_ptr_nonnull(pref);
    const json_t *payload = resolve(doc, pref);
    ck_assert_msg(payload == schema(OPENAPI_PAYLOAD_PREFIX, type), "%s: payload is %s", type, pref);
    json_t *want = json_deep_copy(domain_command_payload_schema(c));
    openapi_schemas_rewrite_refs(want, pref + strlen(OPENAPI_SCHEMAS));
    ck_assert_msg(json_equal(payload, want), "%s: the payload schema differs from its file", type);
    json_decref(want);
    /* type and aggregate_id always required; payload exactly when {} does not validate. */
    json_t *empty = json_object();
    bool needs_payload = !domain_command_validate(c, empty, NULL);
    json_decref(empty);
    const json_t *required = json_object_get(cmd, "required");
    bool listed[3] = {false, false, false};
    static const char *const names[] = {"type", "aggregate_id", "payload"};
    json_array_foreach(required, i, alt)
    {
        for (int k = 0; k < 3; k++)
            listed[k] |= strcmp(json_string_value(alt), names[k]) == 0;
    }
    ck_assert(listed[0] && listed[1]);
    ck_assert_msg(listed[2] == needs_payload, "%s: payload required is %d, {} valid is %d", type,
                  listed[2], !needs_payload);
    free(ref);
}
END_TEST

/* The oneOfs list nothing but the registry's commands and aggregates. */
START_TEST(test_one_ofs_complete)
{
    const json_t *request = schema("", "CommandRequest");
    size_t n = domain_registry_command_count(reg);
    ck_assert_uint_gt(n, 0);
    ck_assert_uint_eq(json_array_size(json_object_get(request, "oneOf")), n);
    ck_assert_uint_eq(
        json_object_size(json_object_get(json_object_get(request, "discriminator"), "mapping")), n);
    const json_t *view = schema("", "AggregateView");
    n = domain_registry_aggregate_count(reg);
    ck_assert_uint_gt(n, 0);
    ck_assert_uint_eq(json_array_size(json_object_get(view, "oneOf")), n);
    const json_t *item =
        json_object_get(json_object_get(doc, "paths"), "/v1/aggregates/{type}/{id}");
    const json_t *type = json_array_get(json_object_get(item, "parameters"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(type, "name")), "type");
    ck_assert_uint_eq(json_array_size(json_object_get(json_object_get(type, "schema"), "enum")), n);
}
END_TEST

/* Each aggregate: in the read's oneOf, with its state schema, and a valid {type} of the path. */
START_TEST(test_aggregate_in_view)
{
    const char *name = domain_registry_aggregate_name(reg, (size_t)_i);
    const json_t *view = schema("", "AggregateView");
    const char *ref = json_string_value(
        json_object_get(json_object_get(json_object_get(view, "discriminator"), "mapping"), name));
    ck_assert_msg(ref != NULL, "%s is not in AggregateView's mapping", name);
    const json_t *agg = resolve(doc, ref);
    ck_assert_ptr_eq(agg, schema(OPENAPI_AGGREGATE_PREFIX, name));
    const json_t *props = json_object_get(agg, "properties");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(props, "aggregate_type"), "const")),
        name);
    const char *sref = json_string_value(json_object_get(json_object_get(props, "state"), "$ref"));
    ck_assert_ptr_nonnull(sref);
    json_t *want = json_deep_copy(domain_registry_aggregate_state_schema(reg, (size_t)_i));
    openapi_schemas_rewrite_refs(want, sref + strlen(OPENAPI_SCHEMAS));
    ck_assert_msg(json_equal(resolve(doc, sref), want), "%s: the state schema differs", name);
    json_decref(want);
    const json_t *item =
        json_object_get(json_object_get(doc, "paths"), "/v1/aggregates/{type}/{id}");
    const json_t *types = json_object_get(
        json_object_get(json_array_get(json_object_get(item, "parameters"), 0), "schema"), "enum");
    size_t i, hits = 0;
    const json_t *v;
    json_array_foreach(types, i, v)
    {
        hits += strcmp(json_string_value(v), name) == 0;
    }
    ck_assert_uint_eq(hits, 1);
}
END_TEST

/* ---- local $ref rewriting ---- */

static const struct {
    const char *in, *out; /* single-quoted JSON; out NULL: unchanged */
} refcases[] = {
    {"{'$ref': '#/$defs/x'}", "{'$ref': '#/components/schemas/N/$defs/x'}"},
    {"{'$ref': '#'}", "{'$ref': '#/components/schemas/N'}"},
    {"{'properties': {'a': {'$ref': '#/$defs/a'}}, '$defs': {'a': {'items': {'$ref': '#/$defs/b'}},"
     " 'b': {'type': 'string'}}}",
     "{'properties': {'a': {'$ref': '#/components/schemas/N/$defs/a'}}, '$defs': {'a': {'items': "
     "{'$ref': '#/components/schemas/N/$defs/b'}}, 'b': {'type': 'string'}}}"},
    {"{'allOf': [{'$ref': '#/$defs/a'}], 'anyOf': [{'$ref': '#/$defs/b'}], 'oneOf': [{'$ref': "
     "'#/$defs/c'}], 'prefixItems': [{'$ref': '#/$defs/d'}], 'items': [{'$ref': '#/$defs/e'}]}",
     "{'allOf': [{'$ref': '#/components/schemas/N/$defs/a'}], 'anyOf': [{'$ref': "
     "'#/components/schemas/N/$defs/b'}], 'oneOf': [{'$ref': '#/components/schemas/N/$defs/c'}], "
     "'prefixItems': [{'$ref': '#/components/schemas/N/$defs/d'}], 'items': [{'$ref': "
     "'#/components/schemas/N/$defs/e'}]}"},
    {"{'not': {'$ref': '#/a'}, 'if': {'$ref': '#/b'}, 'then': {'$ref': '#/c'}, 'else': {'$ref': "
     "'#/d'}, 'additionalProperties': {'$ref': '#/e'}, 'propertyNames': {'$ref': '#/f'}, "
     "'contains': {'$ref': '#/g'}, 'unevaluatedProperties': {'$ref': '#/h'}}",
     "{'not': {'$ref': '#/components/schemas/N/a'}, 'if': {'$ref': '#/components/schemas/N/b'}, "
     "'then': {'$ref': '#/components/schemas/N/c'}, 'else': {'$ref': '#/components/schemas/N/d'}, "
     "'additionalProperties': {'$ref': '#/components/schemas/N/e'}, 'propertyNames': {'$ref': "
     "'#/components/schemas/N/f'}, 'contains': {'$ref': '#/components/schemas/N/g'}, "
     "'unevaluatedProperties': {'$ref': '#/components/schemas/N/h'}}"},
    {"{'patternProperties': {'^a': {'$ref': '#/$defs/p'}}, 'dependentSchemas': {'b': {'$ref': "
     "'#/$defs/q'}}}",
     "{'patternProperties': {'^a': {'$ref': '#/components/schemas/N/$defs/p'}}, "
     "'dependentSchemas': {'b': {'$ref': '#/components/schemas/N/$defs/q'}}}"},
    /* A property named like a keyword is still a schema. */
    {"{'properties': {'const': {'$ref': '#/$defs/c'}}}",
     "{'properties': {'const': {'$ref': '#/components/schemas/N/$defs/c'}}}"},
    /* Values, not schemas: left alone. */
    {"{'const': {'$ref': '#/$defs/x'}, 'enum': [{'$ref': '#/a'}], 'default': {'$ref': '#/a'}, "
     "'examples': [{'$ref': '#/a'}]}",
     NULL},
    /* Not a JSON pointer into this schema: left alone. */
    {"{'$ref': '#anchor'}", NULL},
    {"{'$ref': 'other.json#/a'}", NULL},
    {"{'$ref': 'https://example.com/s#/a'}", NULL},
    {"{'$ref': 5}", NULL},
    /* A resource of its own: its refs resolve against it already. */
    {"{'$id': 'https://example.com/s', '$ref': '#/$defs/x'}", NULL},
    {"{'properties': {'a': {'$id': 'a.json', '$ref': '#/$defs/y'}}, 'items': {'$ref': "
     "'#/$defs/z'}}",
     "{'properties': {'a': {'$id': 'a.json', '$ref': '#/$defs/y'}}, 'items': {'$ref': "
     "'#/components/schemas/N/$defs/z'}}"},
    {"true", NULL},
};

START_TEST(test_rewrite_refs)
{
    json_t *s = J(refcases[_i].in);
    json_t *want = J(refcases[_i].out ? refcases[_i].out : refcases[_i].in);
    openapi_schemas_rewrite_refs(s, "N");
    char *got = json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT);
    ck_assert_msg(json_equal(s, want), "case %d: got %s", _i, got);
    free(got);
    json_decref(s);
    json_decref(want);
}
END_TEST

/* ---- a domain added as a file ---- */

/* A domain the shipped ones do not have, with a local $ref, appears without any C change. */
START_TEST(test_new_domain_appears)
{
    char dir[] = "/tmp/cqrs-openapi.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char file[64];
    snprintf(file, sizeof(file), "%s/widget.json", dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs(
        "{\"aggregate\": \"widget\", \"state\": {\"type\": \"object\"}, \"commands\": {"
        "\"widget.make\": {\"event\": \"widget.made\", \"description\": \"Makes one.\","
        " \"payload\": {\"type\": \"object\", \"properties\": {\"size\": {\"$ref\": "
        "\"#/$defs/size\"}}, \"required\": [\"size\"], \"$defs\": {\"size\": "
        "{\"enum\": [\"s\", \"m\"]}}}, \"rule\": {\"requires\": \"absent\", \"op\": \"create\"}}}}",
        f);
    ck_assert_int_eq(fclose(f), 0);
    char err[512] = "";
    domain_registry *r = domain_registry_load(dir, err, sizeof(err));
    unlink(file);
    rmdir(dir);
    ck_assert_msg(r != NULL, "%s", err);
    json_t *d = openapi_build(r, true);
    ck_assert_ptr_nonnull(d);
    const json_t *cmd = resolve(d, "#/components/schemas/Command.widget.make");
    ck_assert_ptr_nonnull(cmd);
    ck_assert_ptr_nonnull(
        strstr(json_string_value(json_object_get(cmd, "description")), "Makes one."));
    const json_t *size =
        resolve(d, "#/components/schemas/Payload.widget.make/properties/size/$ref");
    ck_assert_str_eq(json_string_value(size),
                     "#/components/schemas/Payload.widget.make/$defs/size");
    const json_t *target = resolve(d, json_string_value(size));
    ck_assert_msg(target && json_object_get(target, "enum"), "the rewritten $ref does not resolve");
    ck_assert_ptr_nonnull(resolve(d, "#/components/schemas/Aggregate.widget"));
    ck_assert_ptr_null(resolve(d, "#/components/schemas/Command.account.open"));
    json_decref(d);
    domain_registry_free(r);
}
END_TEST

/* ---- docs/openapi.json is what the gateway serves for the shipped domains ---- */

/* Reads the output of the gateway binary's --print-openapi for the shipped domains. */
static json_t *printed(void)
{
    const char *build = getenv("CQRS_BUILD") ? getenv("CQRS_BUILD") : "build";
    char cmd[1024];
    /* A clean environment: the binary refuses CQRS_* variables it does not know. */
    snprintf(cmd, sizeof(cmd), "env -i '%s/command-gateway' --print-openapi '--schemas.dir=%s'",
             build, schemas_dir());
    FILE *p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "cannot run %s", cmd);
    json_error_t e;
    json_t *j = json_loadf(p, 0, &e);
    int status = pclose(p);
    ck_assert_msg(j != NULL, "%s: not JSON: %s", cmd, e.text);
    ck_assert_msg(status == 0, "%s: exit status %d", cmd, status);
    return j;
}

/* With auth.mode=off the document asks for no token: no scheme, no security, no 401 or 403. */
START_TEST(test_no_security_without_auth)
{
    json_t *off = openapi_build(reg, false);
    ck_assert_ptr_nonnull(off);
    ck_assert_ptr_null(resolve(off, "#/components/securitySchemes"));
    ck_assert_ptr_nonnull(resolve(doc, "#/components/securitySchemes/bearer"));
    for (size_t i = 0; i < nroutes; i++) {
        const char *method;
        json_t *op;
        json_object_foreach(json_object_get(json_object_get(off, "paths"), routes[i].path), method,
                            op)
        {
            if (strcmp(method, "parameters") == 0)
                continue;
            json_t *responses = json_object_get(op, "responses");
            ck_assert_msg(!json_object_get(op, "security"), "%s %s", method, routes[i].path);
            ck_assert(!json_object_get(responses, "401") && !json_object_get(responses, "403"));
            /* The rate limit still applies to the routes a token would be needed for. */
            ck_assert(!json_object_get(responses, "429") == !routes[i].scope);
        }
    }
    json_decref(off);
}
END_TEST

START_TEST(test_docs_copy_current)
{
    const char *repo = getenv("CQRS_REPO") ? getenv("CQRS_REPO") : ".";
    char path[1024];
    snprintf(path, sizeof(path), "%s/docs/openapi.json", repo);
    json_error_t e;
    json_t *docs = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    ck_assert_msg(docs != NULL, "%s: %s", path, e.text);
    json_t *made = _i == 0 ? json_incref(doc) : printed();
    char where[512] = "";
    first_difference(made, docs, where, sizeof(where));
    ck_assert_msg(json_equal(made, docs),
                  "%s differs from %s at '%s': regenerate it with "
                  "build/command-gateway --print-openapi > docs/openapi.json",
                  path, _i == 0 ? "openapi_build()" : "command-gateway --print-openapi", where);
    json_decref(made);
    json_decref(docs);
}
END_TEST

int main(void)
{
    char err[512] = "";
    reg = domain_registry_load(schemas_dir(), err, sizeof(err));
    if (!reg) {
        fprintf(stderr, "loading %s: %s\n", schemas_dir(), err);
        return EXIT_FAILURE;
    }
    doc = openapi_build(reg, true);
    routes = gateway_routes(&nroutes);

    Suite *s = suite_create("openapi");
    TCase *tc = tcase_create("routes");
    tcase_add_test(tc, test_method_names_complete);
    tcase_add_loop_test(tc, test_route_documented, 0, (int)nroutes);
    tcase_add_test(tc, test_documented_routes_served);
    suite_add_tcase(s, tc);
    tc = tcase_create("domains");
    tcase_add_loop_test(tc, test_command_in_request, 0, (int)domain_registry_command_count(reg));
    tcase_add_test(tc, test_one_ofs_complete);
    tcase_add_loop_test(tc, test_aggregate_in_view, 0, (int)domain_registry_aggregate_count(reg));
    tcase_add_loop_test(tc, test_rewrite_refs, 0, N(refcases));
    tcase_add_test(tc, test_new_domain_appears);
    tcase_add_test(tc, test_no_security_without_auth);
    suite_add_tcase(s, tc);
    tc = tcase_create("docs");
    tcase_add_loop_test(tc, test_docs_copy_current, 0, 2);
    suite_add_tcase(s, tc);

    int failed = check_run(s, CK_FORK_GETENV);
    json_decref(doc);
    domain_registry_free(reg);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
