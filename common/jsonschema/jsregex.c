/* jsregex.c: PCRE2 behind the jsregex interface; the only file that includes pcre2.h. */
#include "jsonschema/jsregex.h"

#include "core/xalloc.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* Backtracking budget of one search: far above what a sane pattern needs on a request field. */
#define JSREGEX_MATCH_LIMIT 1000000u

struct jsregex {
    pcre2_code *code;
};

/* One match context for every search: it only carries the limit, and is never changed. */
static pcre2_match_context *match_ctx;
static pthread_once_t match_ctx_once = PTHREAD_ONCE_INIT;

static void match_ctx_init(void)
{
    match_ctx = pcre2_match_context_create(NULL);
    if (!match_ctx)
        xoom(0);
    pcre2_set_match_limit(match_ctx, JSREGEX_MATCH_LIMIT);
}

jsregex *jsregex_compile(const char *pattern, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_ALT_BSUX | PCRE2_DOLLAR_ENDONLY, &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR why[160];
        pcre2_get_error_message(code, why, sizeof why);
        snprintf(err, errlen, "%s at offset %zu", (const char *)why, (size_t)offset);
        return NULL;
    }
    /* JIT is an optimisation only: where it is unavailable the interpreter runs. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    pthread_once(&match_ctx_once, match_ctx_init);
    jsregex *r = xmalloc(sizeof *r);
    r->code = re;
    return r;
}

void jsregex_free(jsregex *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}

jsregex_result jsregex_search(const jsregex *re, const char *s, size_t len)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    if (!md)
        xoom(0);
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, 0, md, match_ctx);
    pcre2_match_data_free(md);
    if (rc >= 0)
        return JSREGEX_MATCH;
    return rc == PCRE2_ERROR_NOMATCH ? JSREGEX_NOMATCH : JSREGEX_LIMIT;
}
