/* openapi.h: the OpenAPI 3.1 document of the gateway's HTTP API, generated from the domains. */
#ifndef CQRS_OPENAPI_H
#define CQRS_OPENAPI_H

#include "domain.h"

#include <jansson.h>

/*
 * Builds the document: every route of the gateway's table (gateway_routes()) with its
 * parameters, headers and answers (HEAD wherever GET), and the schemas of
 * openapi_schemas_build(): the body of POST /v1/commands is a oneOf of one schema per command
 * type of reg, told apart by the discriminator "type", each embedding the payload schema of its
 * domain file. Deterministic: the same registry gives the same document, member order included.
 * reg is borrowed for the call; the caller owns the result and frees it with json_decref().
 */
json_t *openapi_build(const domain_registry *reg) __attribute__((warn_unused_result));

#endif
