/* jsregex.h: regular expressions for JSON Schema's pattern keywords (PCRE2, UTF mode). */
#ifndef CQRS_JSREGEX_H
#define CQRS_JSREGEX_H

#include <stdbool.h>
#include <stddef.h>

/*
 * A compiled pattern; immutable once compiled, so one may be shared by threads. JSON Schema
 * patterns are ECMA-262 regular expressions searched anywhere in the string (unanchored); PCRE2
 * reads that dialect closely: UTF mode (a "." is one code point), \uXXXX escapes, "$" only at
 * the very end, and \d \w \s stay ASCII as in ECMA-262 without the u flag's Unicode classes.
 */
typedef struct jsregex jsregex;

typedef enum {
    JSREGEX_NOMATCH = 0,
    JSREGEX_MATCH = 1,
    JSREGEX_LIMIT = -1, /* the match gave up at its backtracking limit (see jsregex_search) */
} jsregex_result;

/* Compiles pattern; NULL with err saying where and why on a syntax error. Free with jsregex_free().
 */
jsregex *jsregex_compile(const char *pattern, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees a compiled pattern; NULL is a no-op. */
void jsregex_free(jsregex *re);

/*
 * Searches the UTF-8 text s of len bytes. A pathological pattern cannot pin a CPU on hostile
 * input: past a fixed backtracking budget the search ends with JSREGEX_LIMIT, which callers
 * treat as a failed match.
 */
jsregex_result jsregex_search(const jsregex *re, const char *s, size_t len);

#endif
