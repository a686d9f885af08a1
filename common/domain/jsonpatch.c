/* jsonpatch.c: RFC 7396 JSON Merge Patch, a transcription of the RFC's MergePatch function. */
#include "domain/jsonpatch.h"

json_t *jsonpatch_merge(const json_t *target, const json_t *patch)
{
    if (!json_is_object(patch))
        return json_deep_copy(patch);
    /* Copy the target so the result never aliases the caller's (borrowed) value. */
    json_t *result = json_is_object(target) ? json_deep_copy(target) : json_object();
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)patch, name, value)
    {
        if (json_is_null(value)) {
            json_object_del(result, name);
        } else {
            /* A missing member counts as a non-object target, so it starts from {}. */
            json_t *merged = jsonpatch_merge(json_object_get(result, name), value);
            json_object_set_new(result, name, merged);
        }
    }
    return result;
}
