/* openapi_schemas.h: components/schemas of the OpenAPI document, from the domains and the bodies.
 */
#ifndef CQRS_OPENAPI_SCHEMAS_H
#define CQRS_OPENAPI_SCHEMAS_H

#include "domain/domain.h"

#include <jansson.h>

/* Where the document puts the schemas of one domain; <type> is "account.deposit", <agg> "account".
   Names match OpenAPI's ^[a-zA-Z0-9.\-_]+$ because command and aggregate names do. */
#define OPENAPI_COMMAND_PREFIX   "Command."   /* Command.<type>: the request body of <type> */
#define OPENAPI_PAYLOAD_PREFIX   "Payload."   /* Payload.<type>: the payload schema as written */
#define OPENAPI_STATE_PREFIX     "State."     /* State.<agg>: the state schema as written */
#define OPENAPI_AGGREGATE_PREFIX "Aggregate." /* Aggregate.<agg>: GET /v1/aggregates/<agg>/{id} */
#define OPENAPI_SCHEMAS          "#/components/schemas/"

/*
 * The components/schemas object: CommandRequest (a oneOf of Command.<type> for each command of
 * reg, with a discriminator on "type"), each Payload.<type> and State.<agg> copied from the domain
 * files with their local $refs rewritten, AggregateView (a oneOf of Aggregate.<agg>), and the
 * fixed shapes the routes answer with (CommandApplied, CommandAccepted, CommandRecord, Readiness,
 * Problem, ValidationError, AggregateId, ExpectedVersion). reg is borrowed for the call; the
 * caller owns the result.
 */
json_t *openapi_schemas_build(const domain_registry *reg) __attribute__((warn_unused_result));

/* {"$ref": "#/components/schemas/<prefix><name>"}; the caller owns it. */
json_t *openapi_schemas_ref(const char *prefix, const char *name);

/* {"type": "string"} with "format" when format is not NULL; the caller owns it. */
json_t *openapi_schemas_string(const char *format);

/* The names of reg's aggregate types, in registry order, as a new JSON array. */
json_t *openapi_schemas_aggregate_names(const domain_registry *reg);

/*
 * Rewrites in place the local "$ref"s of schema ("#" and "#/..." fragments, which resolve
 * against the schema's own root) so that they still resolve once the schema sits at
 * #/components/schemas/<name> of the document: "#/$defs/x" becomes
 * "#/components/schemas/<name>/$defs/x". Only keywords that hold subschemas are walked, so the
 * values of const, enum, default and examples are left as they are; a (sub)schema with its own
 * "$id" is a resource of its own, against which its refs already resolve, and is left alone.
 */
void openapi_schemas_rewrite_refs(json_t *schema, const char *name);

#endif
