/* jsonschema.h: a JSON Schema (draft 2020-12 subset) validator over jansson values. */
#ifndef CQRS_JSONSCHEMA_H
#define CQRS_JSONSCHEMA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Supported keywords (docs/domains.md has the list with their semantics): type, enum, const,
 * multipleOf, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength (Unicode
 * code points), pattern (ECMA-262 via PCRE2, unanchored), format (date-time, date, time, uuid,
 * email; asserted), minItems, maxItems, uniqueItems, prefixItems, items, contains, minContains,
 * maxContains, properties, patternProperties, additionalProperties, propertyNames, required,
 * dependentRequired, dependentSchemas, minProperties, maxProperties, allOf, anyOf, oneOf, not,
 * if/then/else, $ref (local: "#" and "#/json/pointer"), $defs, $id (root only), $schema (draft
 * 2020-12 only). Annotations accepted and ignored: title, description, $comment, examples,
 * default, deprecated, readOnly, writeOnly. Any other keyword is a compile error. Boolean schemas
 * true and false are valid. A compiled schema is immutable, so one may be shared by threads.
 */
typedef struct jschema jschema;

/*
 * Compiles a schema; schema is borrowed for the call only (the compiled form keeps a copy).
 * Unknown or unsupported keywords and malformed keyword values give NULL with err naming the
 * keyword and its JSON pointer in the schema. Caller frees the result with jschema_free().
 */
jschema *jschema_compile(const json_t *schema, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees a compiled schema; NULL is a no-op. */
void jschema_free(jschema *s);

/*
 * Validates instance (borrowed). Returns true when valid. When errors is a JSON array, appends
 * one object per failure: {"pointer": "/amount", "keyword": "minimum", "message": "must be >= 1"}
 * where pointer is the RFC 6901 path in the instance ("" for the root). A missing required
 * member and a member refused by additionalProperties are reported at the member's own pointer.
 * With errors NULL validation stops at the first failure.
 */
bool jschema_validate(const jschema *s, const json_t *instance, json_t *errors)
    __attribute__((warn_unused_result));

/*
 * Deep JSON equality as const and enum see it: numbers compare by value (1 == 1.0), objects
 * ignore member order, arrays compare element-wise.
 */
bool jschema_equal(const json_t *a, const json_t *b);

/*
 * Appends {"pointer", "keyword", "message"} to errors when it is a JSON array; a no-op
 * otherwise. Lets other modules report failures in the same shape as jschema_validate().
 */
void jschema_error_append(json_t *errors, const char *pointer, const char *keyword,
                          const char *message);

/*
 * Appends "/" and token, with '~' and '/' escaped, to a JSON pointer. Takes ownership of pointer
 * (a malloc'd string, or NULL for the root) and returns a new string; caller frees with free().
 */
char *jschema_pointer_append(char *pointer, const char *token);

#endif
