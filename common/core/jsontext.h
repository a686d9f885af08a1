/*
 * jsontext.h: JSON text written straight into a growing buffer, for the rows the processor sends
 * to PostgreSQL and the messages it sends to Kafka. Building a jansson tree only to dump it costs
 * an allocation per member and a second pass; here each value is encoded once, where it goes, and
 * a value encoded earlier (a state, an event) is spliced in as it is.
 *
 * A value that cannot be JSON (a string that is not UTF-8 text, a tree jansson cannot encode)
 * marks the buffer failed: jsontext_finish() then returns NULL, never a text with a value left out.
 */
#ifndef CQRS_JSONTEXT_H
#define CQRS_JSONTEXT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct jsontext {
    char *data;
    size_t len, cap;
    bool failed;
} jsontext;

/* Appends n bytes as they are: punctuation, member names, JSON encoded before. */
void jsontext_raw(jsontext *t, const char *s, size_t n);
/* Appends a string literal as it is (only a literal: anything else does not compile). */
#define JSONTEXT_LIT(t, lit) jsontext_raw((t), "" lit "", sizeof(lit) - 1)
/* Appends s as a JSON string; NULL appends null. Fails the buffer when s is not UTF-8. */
void jsontext_str(jsontext *t, const char *s);
/* Appends an integer. */
void jsontext_int(jsontext *t, long long v);
/* Appends v encoded compactly (NULL: null); fails the buffer when jansson cannot encode it. */
void jsontext_json(jsontext *t, const json_t *v);
/* The same with every object's members in key order, as json_dumps(JSON_SORT_KEYS) writes them. */
void jsontext_json_sorted(jsontext *t, const json_t *v);
/* Appends v, which must be a complete JSON text or NULL (then null). */
void jsontext_text(jsontext *t, const char *v);

/* The text, NUL-terminated, owned by the caller (free()); NULL when the buffer failed. The buffer
   is empty again afterwards. */
char *jsontext_finish(jsontext *t, size_t *len);
/* Frees the buffer's memory. */
void jsontext_free(jsontext *t);

#endif
