/* jskeyword.h: the contract between the JSON Schema core (jsonschema.c) and its keyword table. */
#ifndef CQRS_JSKEYWORD_H
#define CQRS_JSKEYWORD_H

/*
 * Internal to the validator: only jsonschema.c and jskeyword.c include this. A keyword is a row
 * {name, compile, validate}; adding one means writing two functions in jskeyword.c and a row.
 */
#include "jsonschema/jsonschema.h"

#include "jsonschema/jsformat.h"
#include "jsonschema/jsregex.h"

/* Compile-time context, owned by the core: the current schema pointer and the error buffer. */
typedef struct jskw_compile jskw_compile;
/* Validation context, owned by the core: the current instance pointer and the error list. */
typedef struct jskw_check jskw_check;

typedef struct jkw jkw;

typedef struct {
    const char *name;
    /* Checks the keyword's value and fills kw; false after jschema_compile_fail(). NULL compile
     * marks an annotation, accepted and ignored. */
    bool (*compile)(jkw *kw, const json_t *value, jskw_compile *c);
    /* Checks inst; false after jschema_fail() or a failing jschema_check_at(). */
    bool (*validate)(const jkw *kw, const json_t *inst, jskw_check *v);
} jskeyword;

/* A compiled keyword. The slots are generic; the core frees every one that is set. */
struct jkw {
    const jskeyword *def;
    const json_t *value;  /* the keyword's value, borrowed from the schema copy the root owns */
    const json_t *schema; /* the schema object holding the keyword, to see sibling keywords */
    const jschema *node;  /* the compiled schema the keyword belongs to */
    unsigned types;       /* type: accepted type bits (see jskeyword.c) */
    json_int_t limit;     /* length and count bounds */
    size_t nsub;
    jschema **sub;      /* subschemas (borrowed from the root): items, not, allOf, $ref... */
    const char **names; /* properties and the like: member names parallel to sub */
    size_t nre;
    jsregex **re;       /* pattern: one; patternProperties: parallel to sub */
    jsformat_fn format; /* format */
    char *message;      /* failure message, built once at compile time */
};

/* The applicator keywords (jskw_apply.c), evaluated after the assertions of jskeyword.c. */
extern const jskeyword jskw_apply_keywords[];
extern const size_t jskw_apply_count;

/* A validate function that accepts everything: for keywords a sibling evaluates. */
bool jskw_pass(const jkw *kw, const json_t *inst, jskw_check *v);

/* The keyword named name; NULL when it is unsupported. */
const jskeyword *jskeyword_find(const char *name);
/* The i-th keyword in evaluation order; NULL past the end. */
const jskeyword *jskeyword_at(size_t i);

/* ---- services of the core (jsonschema.c) for keyword implementations ---- */

/* Records a compile error at the current schema pointer; returns false. */
bool jschema_compile_fail(jskw_compile *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Compiles the subschema at the current pointer plus token (NULL: the current pointer). */
jschema *jschema_compile_at(jskw_compile *c, const char *token, const json_t *schema);
/*
 * The node a local reference ("#" or "#/json/pointer", percent-encoded as a URI fragment) names
 * in the document being compiled, compiling it if needed; NULL after a compile error.
 */
jschema *jschema_resolve_ref(jskw_compile *c, const char *ref);
/* True when kw belongs to the root schema of the document being compiled. */
bool jschema_is_root(const jskw_compile *c, const jkw *kw);
/* The compiled keyword name beside kw in the same schema object; NULL when absent. */
const jkw *jschema_sibling(const jkw *kw, const char *name);
/* Records a validation failure at the current instance pointer; returns false. */
bool jschema_fail(jskw_check *v, const char *keyword, const char *message);
/* Records a failure at the current instance pointer plus token (a member name); returns false. */
bool jschema_fail_at(jskw_check *v, const char *token, const char *keyword, const char *message);
/* Validates inst against s at the current pointer plus token (NULL: the current pointer). */
bool jschema_check_at(jskw_check *v, const char *token, const jschema *s, const json_t *inst);
/* True when inst satisfies s; records nothing (for anyOf, oneOf, not). */
bool jschema_matches(jskw_check *v, const jschema *s, const json_t *inst);
/* True when every failure is wanted; false when the first one decides. */
bool jschema_collecting(const jskw_check *v);
/* True when s is the boolean schema false. */
bool jschema_is_false(const jschema *s);
/* Orders two JSON numbers (-1, 0, 1); exact for two integers, by double otherwise. */
int jschema_num_cmp(const json_t *a, const json_t *b);

#endif
