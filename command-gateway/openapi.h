/* openapi.h: the OpenAPI 3.1 document of the gateway's HTTP API, generated from the domains. */
#ifndef CQRS_OPENAPI_H
#define CQRS_OPENAPI_H

#include "domain/domain.h"

#include <jansson.h>
#include <stdbool.h>

/*
 * Builds the document: every route of the gateway's table (gateway_routes()) with its
 * parameters, headers and answers (HEAD wherever GET), and the schemas of
 * openapi_schemas_build(): the body of POST /v1/commands is a oneOf of one schema per command
 * type of reg, told apart by the discriminator "type", each embedding the payload schema of its
 * domain file. bearer: authentication is on (auth.mode=jwt): the routes that need a token
 * declare the bearer security scheme with their scope, and answer 401 and 403; without it the
 * document declares no security. Deterministic: the same registry gives the same document,
 * member order included. reg is borrowed for the call; the caller owns the result and frees it
 * with json_decref().
 */
json_t *openapi_build(const domain_registry *reg, bool bearer) __attribute__((warn_unused_result));

#endif
