/* openapi_schemas.c: the schemas of the OpenAPI document: the domains' and the bodies' shapes. */
#include "openapi_schemas.h"

#include "domain/envelope.h"
#include "intake.h"
#include "core/xalloc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- local $ref rewriting ---- */

/* The keywords whose value is one subschema, an object of subschemas, or an array of them. */
static const char *const one_schema[] = {
    "additionalProperties",
    "additionalItems",
    "items",
    "not",
    "contains",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
};
static const char *const schema_maps[] = {"properties", "patternProperties", "$defs", "definitions",
                                          "dependentSchemas"};
static const char *const schema_lists[] = {"allOf", "anyOf", "oneOf", "prefixItems", "items"};

static void rewrite(json_t *s, const char *base)
{
    if (!json_is_object(s) || json_object_get(s, "$id"))
        return;
    const char *r = json_string_value(json_object_get(s, "$ref"));
    /* A JSON pointer fragment; a plain-name fragment ("#anchor") resolves anywhere. */
    if (r && r[0] == '#' && (r[1] == '\0' || r[1] == '/'))
        json_object_set_new(s, "$ref", json_sprintf("%s%s", base, r + 1));
    const char *key;
    json_t *v;
    size_t i;
    for (size_t k = 0; k < N(one_schema); k++)
        rewrite(json_object_get(s, one_schema[k]), base);
    for (size_t k = 0; k < N(schema_maps); k++) {
        json_t *m = json_object_get(s, schema_maps[k]);
        if (json_is_object(m)) {
            json_object_foreach(m, key, v)
            {
                rewrite(v, base);
            }
        }
    }
    for (size_t k = 0; k < N(schema_lists); k++) {
        json_array_foreach(json_object_get(s, schema_lists[k]), i, v)
        {
            rewrite(v, base);
        }
    }
}

void openapi_schemas_rewrite_refs(json_t *schema, const char *name)
{
    char *base = xasprintf(OPENAPI_SCHEMAS "%s", name);
    rewrite(schema, base);
    free(base);
}

/* ---- building blocks ---- */

/* {"$ref": "#/components/schemas/<prefix><name>"} */
json_t *openapi_schemas_ref(const char *prefix, const char *name)
{
    return json_pack("{s:o}", "$ref", json_sprintf(OPENAPI_SCHEMAS "%s%s", prefix, name));
}

json_t *openapi_schemas_string(const char *format)
{
    json_t *s = json_pack("{s:s}", "type", "string");
    if (format)
        json_object_set_new(s, "format", json_string(format));
    return s;
}

/* ---- components ---- */

static json_t *problem_schema(void)
{
    return json_pack(
        "{s:s, s:s, s:{s:o, s:o, s:o, s:o, s:{s:s, s:s, s:o}, s:o, s:{s:s, s:i, s:s}, s:o},"
        " s:[s, s, s]}",
        "type", "object", "description",
        "An RFC 9457 problem. Rejections of a command also carry command_id and, when the "
        "aggregate exists, current_version.",
        "properties", "type",
        json_pack("{s:s, s:s, s:s}", "type", "string", "format", "uri-reference", "description",
                  "/problems/<name>, relative to the gateway"),
        "title", openapi_schemas_string(NULL), "status", json_pack("{s:s}", "type", "integer"),
        "detail", openapi_schemas_string(NULL), "errors", "type", "array", "description",
        "one entry per failure: the payload's schema, a rule's precondition or the state's "
        "invariants (ValidationError), or a query parameter (ParameterError)",
        "items",
        json_pack("{s:[o, o]}", "oneOf", openapi_schemas_ref("", "ValidationError"),
                  openapi_schemas_ref("", "ParameterError")),
        "command_id", openapi_schemas_string("uuid"), "current_version", "type", "integer",
        "minimum", 0, "description", "the aggregate's version when the command was rejected",
        "idempotency_key", openapi_schemas_string(NULL), "required", "type", "title", "status");
}

static json_t *validation_error_schema(void)
{
    return json_pack(
        "{s:s, s:{s:o, s:o, s:o}, s:[s, s, s]}", "type", "object", "properties", "pointer",
        json_pack("{s:s, s:s, s:s}", "type", "string", "format", "json-pointer", "description",
                  "where in the instance (\"\" for its root)"),
        "keyword",
        json_pack("{s:s, s:s}", "type", "string", "description",
                  "the schema keyword, or requires / where for a rule"),
        "message", openapi_schemas_string(NULL), "required", "pointer", "keyword", "message");
}

static json_t *parameter_error_schema(void)
{
    return json_pack(
        "{s:s, s:{s:o, s:o}, s:[s, s], s:b}", "type", "object", "properties", "parameter",
        json_pack("{s:s, s:s}", "type", "string", "description", "the query parameter at fault"),
        "message", openapi_schemas_string(NULL), "required", "parameter", "message",
        "additionalProperties", 0);
}

static json_t *page_schema(void)
{
    return json_pack("{s:s, s:{s:{s:s, s:o}, s:{s:[s, s], s:s}}, s:[s, s]}", "type", "object",
                     "properties", "items", "type", "array", "items",
                     openapi_schemas_ref("", "AggregateView"), "next_cursor", "type", "string",
                     "null", "description",
                     "pass as cursor= for the next page; null on the last page", "required",
                     "items", "next_cursor");
}

/* The names of the aggregate types, as a JSON array. */
json_t *openapi_schemas_aggregate_names(const domain_registry *reg)
{
    json_t *a = json_array();
    for (size_t i = 0; i < domain_registry_aggregate_count(reg); i++)
        json_array_append_new(a, json_string(domain_registry_aggregate_name(reg, i)));
    return a;
}

static json_t *applied_schema(const domain_registry *reg)
{
    return json_pack(
        "{s:s, s:{s:o, s:{s:s, s:s}, s:{s:s, s:o}, s:o, s:{s:s, s:i}, s:{s:[s, s], s:s},"
        " s:{s:s, s:{s:o, s:o}, s:[s, s]}, s:o},"
        " s:[s, s, s, s, s, s, s, s]}",
        "type", "object", "properties", "command_id", openapi_schemas_string("uuid"), "status",
        "type", "string", "const", "applied", "aggregate_type", "type", "string", "enum",
        openapi_schemas_aggregate_names(reg), "aggregate_id", openapi_schemas_string(NULL),
        "version", "type", "integer", "minimum", 1, "state", "type", "object", "null",
        "description", "the aggregate's state after the command; null once deleted", "event",
        "type", "object", "properties", "id",
        json_pack("{s:s, s:s}", "type", "string", "description",
                  "<tenant>/<aggregate type>/<aggregate id>/<version>"),
        "type", openapi_schemas_string(NULL), "required", "id", "type", "idempotency_key",
        openapi_schemas_string(NULL), "required", "command_id", "status", "aggregate_type",
        "aggregate_id", "version", "state", "event", "idempotency_key");
}

static json_t *accepted_schema(const domain_registry *reg)
{
    return json_pack("{s:s, s:{s:o, s:{s:s, s:s}, s:{s:s, s:o}, s:o, s:o}, s:[s, s, s, s, s]}",
                     "type", "object", "properties", "command_id", openapi_schemas_string("uuid"),
                     "status", "type", "string", "const", "accepted", "aggregate_type", "type",
                     "string", "enum", openapi_schemas_aggregate_names(reg), "aggregate_id",
                     openapi_schemas_string(NULL), "idempotency_key", openapi_schemas_string(NULL),
                     "required", "command_id", "status", "aggregate_type", "aggregate_id",
                     "idempotency_key");
}

static json_t *record_schema(void)
{
    json_t *props = json_pack(
        "{s:o, s:{s:s, s:[s, s, s, s], s:s}, s:o, s:o, s:o, s:o, s:{s:[s, s]}, s:{s:[s, s]},"
        " s:{s:[s, s], s:s}, s:o, s:{s:[s, s], s:s}}",
        "command_id", openapi_schemas_string("uuid"), "status", "type", "string", "enum",
        "accepted", "applied", "rejected", "abandoned", "description",
        "accepted: in Kafka, not applied yet (result and finished_at are null); abandoned: "
        "accepted for longer than the processor's idempotency.abandon_after_s, so possibly never "
        "in Kafka, and still applied if it arrives (result is null)",
        "type", openapi_schemas_string(NULL), "aggregate_type", openapi_schemas_string(NULL),
        "aggregate_id", openapi_schemas_string(NULL), "idempotency_key",
        openapi_schemas_string(NULL), "http_status", "type", "integer", "null", "version", "type",
        "integer", "null", "result", "type", "object", "null", "description",
        "the body the synchronous answer had", "created_at", openapi_schemas_string("date-time"),
        "finished_at", "type", "string", "null", "format", "date-time");
    json_t *required = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(props, key, v)
    {
        json_array_append_new(required, json_string(key));
    }
    return json_pack("{s:s, s:o, s:o}", "type", "object", "properties", props, "required",
                     required);
}

static json_t *readiness_schema(void)
{
    return json_pack("{s:s, s:{s:{s:[s, s]}, s:{s:s}, s:{s:s}, s:{s:s}}, s:[s, s, s, s]}", "type",
                     "object", "properties", "status", "enum", "ready", "not ready", "postgresql",
                     "type", "boolean", "kafka", "type", "boolean", "replies", "type", "boolean",
                     "required", "status", "postgresql", "kafka", "replies");
}

/* Command.<type>: the request body of one command type. */
static json_t *command_schema(const domain_command *c)
{
    const char *type = domain_command_type(c);
    const char *what = domain_command_description(c);
    char *desc = xasprintf("%s%sAggregate type %s; recorded as the event %s.", what ? what : "",
                           what ? " " : "", domain_command_aggregate(c), domain_command_event(c));
    json_t *payload = openapi_schemas_ref(OPENAPI_PAYLOAD_PREFIX, type);
    /* The gateway refuses a payload that is not an object before its schema sees it. */
    const char *root_type =
        json_string_value(json_object_get(domain_command_payload_schema(c), "type"));
    if (!root_type || strcmp(root_type, "object") != 0)
        json_object_set_new(payload, "type", json_string("object"));
    json_t *required = json_pack("[s, s]", "type", "aggregate_id");
    /* An absent payload is taken as {}: required only when the schema refuses {}. */
    json_t *empty = json_object();
    if (!domain_command_validate(c, empty, NULL))
        json_array_append_new(required, json_string("payload"));
    json_decref(empty);
    json_t *s =
        json_pack("{s:s, s:s, s:s, s:{s:{s:s, s:s}, s:o, s:o, s:o}, s:o, s:b}", "type", "object",
                  "title", type, "description", desc, "properties", "type", "type", "string",
                  "const", type, "aggregate_id", openapi_schemas_ref("", "AggregateId"), "payload",
                  payload, "expected_version", openapi_schemas_ref("", "ExpectedVersion"),
                  "required", required, "additionalProperties", 0);
    free(desc);
    return s;
}

/* Aggregate.<agg>: what GET /v1/aggregates/<agg>/{id} answers. */
static json_t *aggregate_schema(const domain_registry *reg, size_t i)
{
    const char *name = domain_registry_aggregate_name(reg, i);
    const char *desc = domain_registry_aggregate_description(reg, i);
    json_t *s =
        json_pack("{s:s, s:s, s:{s:{s:s, s:s}, s:o, s:{s:s, s:i}, s:o, s:o}, s:[s, s, s, s, s]}",
                  "type", "object", "title", name, "properties", "aggregate_type", "type", "string",
                  "const", name, "aggregate_id", openapi_schemas_string(NULL), "version", "type",
                  "integer", "minimum", 1, "state", openapi_schemas_ref(OPENAPI_STATE_PREFIX, name),
                  "updated_at", openapi_schemas_string("date-time"), "required", "aggregate_type",
                  "aggregate_id", "version", "state", "updated_at");
    if (desc)
        json_object_set_new(s, "description", json_string(desc));
    return s;
}

/* A schema of the domain file, copied to components/schemas/<prefix><name>. */
static void add_domain_schema(json_t *schemas, const char *prefix, const char *name,
                              const json_t *schema)
{
    char *key = xasprintf("%s%s", prefix, name);
    json_t *copy = json_deep_copy(schema);
    openapi_schemas_rewrite_refs(copy, key);
    json_object_set_new(schemas, key, copy);
    free(key);
}

/* A oneOf over the schemas of one prefix, told apart by the member property. */
static json_t *one_of(const char *description, const char *property)
{
    return json_pack("{s:s, s:[], s:{s:s, s:{}}}", "description", description, "oneOf",
                     "discriminator", "propertyName", property, "mapping");
}

static void one_of_add(json_t *u, const char *prefix, const char *name)
{
    json_t *r = openapi_schemas_ref(prefix, name);
    json_object_set(json_object_get(json_object_get(u, "discriminator"), "mapping"), name,
                    json_object_get(r, "$ref"));
    json_array_append_new(json_object_get(u, "oneOf"), r);
}

json_t *openapi_schemas_build(const domain_registry *reg)
{
    json_t *s = json_object();
    json_t *request = one_of("A command: its type selects the payload schema. Unknown members "
                             "are refused; an absent payload is taken as {}.",
                             "type");
    for (size_t i = 0; i < domain_registry_command_count(reg); i++) {
        const domain_command *c = domain_registry_command_at(reg, i);
        const char *type = domain_command_type(c);
        one_of_add(request, OPENAPI_COMMAND_PREFIX, type);
    }
    json_object_set_new(s, "CommandRequest", request);
    for (size_t i = 0; i < domain_registry_command_count(reg); i++) {
        const domain_command *c = domain_registry_command_at(reg, i);
        const char *type = domain_command_type(c);
        char *key = xasprintf(OPENAPI_COMMAND_PREFIX "%s", type);
        json_object_set_new(s, key, command_schema(c));
        free(key);
        add_domain_schema(s, OPENAPI_PAYLOAD_PREFIX, type, domain_command_payload_schema(c));
    }
    json_object_set_new(
        s, "AggregateId",
        json_pack("{s:s, s:i, s:i, s:s}", "type", "string", "minLength", 1, "maxLength",
                  INTAKE_MAX_AGGREGATE_LEN, "description",
                  "The aggregate the command acts on: 1 to 255 bytes of UTF-8; commands on one "
                  "aggregate are applied in order."));
    json_object_set_new(s, "ExpectedVersion",
                        json_pack("{s:s, s:i, s:I, s:s}", "type", "integer", "minimum", 0,
                                  "maximum", (json_int_t)ENVELOPE_MAX_VERSION, "description",
                                  "Apply only at this version (0: no command applied to the "
                                  "aggregate yet); 412 otherwise. Same as If-Match. A JSON "
                                  "integer literal: 1.0 is refused."));
    json_t *view = one_of("An aggregate's current state; aggregate_type selects its schema.",
                          "aggregate_type");
    for (size_t i = 0; i < domain_registry_aggregate_count(reg); i++)
        one_of_add(view, OPENAPI_AGGREGATE_PREFIX, domain_registry_aggregate_name(reg, i));
    json_object_set_new(s, "AggregateView", view);
    for (size_t i = 0; i < domain_registry_aggregate_count(reg); i++) {
        const char *name = domain_registry_aggregate_name(reg, i);
        char *key = xasprintf(OPENAPI_AGGREGATE_PREFIX "%s", name);
        json_object_set_new(s, key, aggregate_schema(reg, i));
        free(key);
        add_domain_schema(s, OPENAPI_STATE_PREFIX, name,
                          domain_registry_aggregate_state_schema(reg, i));
    }
    json_object_set_new(s, "CommandApplied", applied_schema(reg));
    json_object_set_new(s, "CommandAccepted", accepted_schema(reg));
    json_object_set_new(s, "CommandRecord", record_schema());
    json_object_set_new(s, "Readiness", readiness_schema());
    json_object_set_new(s, "Problem", problem_schema());
    json_object_set_new(s, "ValidationError", validation_error_schema());
    json_object_set_new(s, "ParameterError", parameter_error_schema());
    json_object_set_new(s, "AggregatePage", page_schema());
    return s;
}
