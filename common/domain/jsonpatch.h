/* jsonpatch.h: RFC 7396 JSON Merge Patch over jansson values. */
#ifndef CQRS_JSONPATCH_H
#define CQRS_JSONPATCH_H

#include <jansson.h>

/*
 * Applies patch to target exactly as RFC 7396 section 2 defines it: an object patch merges
 * member by member (null removes a member, a non-object target is first replaced by {}), any
 * other patch replaces the target. Both arguments are borrowed; target may be NULL (absent).
 * Returns a new value that shares nothing with either argument; caller releases with json_decref().
 */
json_t *jsonpatch_merge(const json_t *target, const json_t *patch);

#endif
