/* test_jsonschema.c: table-driven tests of the JSON Schema compiler and validator. */
#include "checkrun.h"
#include "jsonschema/jsonschema.h"
#include "jtext.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/*
 * One validation case. errors lists the expected failures as [pointer, keyword] pairs, in any
 * order; "[]" means valid. message, when set, is the expected message of the first failure.
 */
typedef struct {
    const char *schema;
    const char *instance;
    const char *errors;
    const char *message;
} vcase;

static const vcase vcases[] = {
    /* type */
    {"{'type':'string'}", "'a'", "[]", NULL},
    {"{'type':'string'}", "1", "[['','type']]", "must be of type string"},
    {"{'type':'integer'}", "1", "[]", NULL},
    {"{'type':'integer'}", "1.0", "[]", NULL},
    {"{'type':'integer'}", "-0.0", "[]", NULL},
    {"{'type':'integer'}", "1.5", "[['','type']]", NULL},
    {"{'type':'integer'}", "'1'", "[['','type']]", NULL},
    {"{'type':'number'}", "1", "[]", NULL},
    {"{'type':'number'}", "1.5", "[]", NULL},
    {"{'type':'number'}", "true", "[['','type']]", NULL},
    {"{'type':['string','null']}", "null", "[]", NULL},
    {"{'type':['string','null']}", "true", "[['','type']]", "must be of type string or null"},
    {"{'type':'object'}", "{}", "[]", NULL},
    {"{'type':'object'}", "[]", "[['','type']]", NULL},
    {"{'type':'array'}", "[]", "[]", NULL},
    {"{'type':'boolean'}", "false", "[]", NULL},
    {"{'type':'boolean'}", "0", "[['','type']]", NULL},
    {"{'type':'null'}", "null", "[]", NULL},
    {"{'type':'null'}", "0", "[['','type']]", NULL},
    /* enum and const: deep equality, 1 == 1.0 */
    {"{'enum':['open','closed']}", "'open'", "[]", NULL},
    {"{'enum':['open','closed']}", "'shut'", "[['','enum']]",
     "must be one of [\"open\",\"closed\"]"},
    {"{'enum':[1,{'a':[1]}]}", "1.0", "[]", NULL},
    {"{'enum':[1,{'a':[1]}]}", "{'a':[1.0]}", "[]", NULL},
    {"{'enum':[1,{'a':[1]}]}", "{'a':[1],'b':2}", "[['','enum']]", NULL},
    {"{'const':{'a':1,'b':[1,2]}}", "{'b':[1,2.0],'a':1.0}", "[]", NULL},
    {"{'const':{'a':1,'b':[1,2]}}", "{'a':1,'b':[2,1]}", "[['','const']]", NULL},
    {"{'const':null}", "null", "[]", NULL},
    {"{'const':null}", "false", "[['','const']]", "must equal null"},
    {"{'const':1}", "true", "[['','const']]", NULL},
    {"{'const':'a'}", "'a'", "[]", NULL},
    /* numeric bounds; non-numbers are not their business */
    {"{'minimum':1}", "1", "[]", NULL},
    {"{'minimum':1}", "0", "[['','minimum']]", "must be >= 1"},
    {"{'minimum':1}", "0.5", "[['','minimum']]", NULL},
    {"{'minimum':1}", "'x'", "[]", NULL},
    {"{'maximum':10}", "10", "[]", NULL},
    {"{'maximum':10}", "10.5", "[['','maximum']]", "must be <= 10"},
    {"{'maximum':9007199254740992}", "9007199254740993", "[['','maximum']]", NULL},
    {"{'exclusiveMinimum':0}", "0", "[['','exclusiveMinimum']]", "must be > 0"},
    {"{'exclusiveMinimum':0}", "0.001", "[]", NULL},
    {"{'exclusiveMaximum':10}", "10", "[['','exclusiveMaximum']]", "must be < 10"},
    {"{'exclusiveMaximum':10}", "9.99", "[]", NULL},
    {"{'minimum':0.5}", "0.5", "[]", NULL},
    /* string lengths count code points: e-acute is 2 bytes, the CJK 3, the emoji 4 */
    {"{'minLength':2}", "'ab'", "[]", NULL},
    {"{'minLength':2}", "'\\u00e9'", "[['','minLength']]", "must have at least 2 characters"},
    {"{'maxLength':3}", "'h\\u00e9\\u00e9'", "[]", NULL},
    {"{'maxLength':3}", "'\\u65e5\\u672c\\u8a9e'", "[]", NULL},
    {"{'maxLength':3}", "'\\u65e5\\u672c\\u8a9ex'", "[['','maxLength']]", NULL},
    {"{'maxLength':3}", "'\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00'", "[]", NULL},
    {"{'maxLength':3}", "'\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00'",
     "[['','maxLength']]", "must have at most 3 characters"},
    {"{'maxLength':0}", "5", "[]", NULL},
    /* pattern: POSIX ERE, unanchored unless the pattern anchors itself */
    {"{'pattern':'^[a-z]+$'}", "'abc'", "[]", NULL},
    {"{'pattern':'^[a-z]+$'}", "'abC'", "[['','pattern']]", NULL},
    {"{'pattern':'b'}", "'abc'", "[]", NULL},
    {"{'pattern':'^(ab|cd){2}$'}", "'abcd'", "[]", NULL},
    {"{'pattern':'^(ab|cd){2}$'}", "'abc'", "[['','pattern']]", NULL},
    {"{'pattern':'x'}", "5", "[]", NULL},
    /* arrays */
    {"{'items':{'type':'integer'}}", "[1,2]", "[]", NULL},
    {"{'items':{'type':'integer'}}", "[1,'x',3,'y']", "[['/1','type'],['/3','type']]", NULL},
    {"{'items':{'type':'integer'}}", "'not an array'", "[]", NULL},
    {"{'minItems':1}", "[]", "[['','minItems']]", "must have at least 1 items"},
    {"{'minItems':1}", "[0]", "[]", NULL},
    {"{'maxItems':1}", "[1,2]", "[['','maxItems']]", NULL},
    {"{'maxItems':1}", "[1]", "[]", NULL},
    /* objects */
    {"{'properties':{'a':{'type':'string'}}}", "{'a':1}", "[['/a','type']]", NULL},
    {"{'properties':{'a':{'type':'string'}}}", "{'b':1}", "[]", NULL},
    {"{'required':['a','b']}", "{'a':1}", "[['/b','required']]", "is required"},
    {"{'required':['a','b']}", "{'a':1,'b':null}", "[]", NULL},
    {"{'required':['a']}", "'not an object'", "[]", NULL},
    {"{'properties':{'a':{}},'additionalProperties':false}", "{'a':1,'b':2}",
     "[['/b','additionalProperties']]", "is not allowed"},
    {"{'properties':{'a':{}},'additionalProperties':false}", "{'a':1}", "[]", NULL},
    {"{'additionalProperties':false}", "{}", "[]", NULL},
    {"{'properties':{'a':{}},'additionalProperties':{'type':'integer'}}", "{'a':'x','b':'y'}",
     "[['/b','type']]", NULL},
    {"{'additionalProperties':true}", "{'a':1}", "[]", NULL},
    {"{'type':'object','properties':{'a':{'type':'integer'}},'required':['b']}", "{'a':'x'}",
     "[['/b','required'],['/a','type']]", NULL},
    /* pointers: nesting and RFC 6901 escapes */
    {"{'properties':{'items':{'type':'array','items':{'type':'object','properties':{'x':{"
     "'type':'integer','minimum':0}},'required':['y']}}}}",
     "{'items':[{'x':-1,'y':1},{'x':1}]}", "[['/items/0/x','minimum'],['/items/1/y','required']]",
     NULL},
    {"{'properties':{'a/b':{'type':'integer'},'m~n':{'type':'integer'}}}", "{'a/b':'x','m~n':'y'}",
     "[['/a~1b','type'],['/m~0n','type']]", NULL},
    /* combinators */
    {"{'allOf':[{'type':'integer'},{'minimum':5}]}", "3", "[['','minimum']]", NULL},
    {"{'allOf':[{'type':'integer'},{'minimum':5}]}", "7", "[]", NULL},
    {"{'allOf':[{'type':'integer'},{'minimum':5}]}", "2.5", "[['','type'],['','minimum']]", NULL},
    {"{'anyOf':[{'type':'string'},{'type':'integer'}]}", "1", "[]", NULL},
    {"{'anyOf':[{'type':'string'},{'type':'integer'}]}", "1.5", "[['','anyOf']]", NULL},
    {"{'oneOf':[{'type':'integer'},{'minimum':0}]}", "5", "[['','oneOf']]", NULL},
    {"{'oneOf':[{'type':'integer'},{'minimum':0}]}", "-1", "[]", NULL},
    {"{'oneOf':[{'type':'integer'},{'minimum':0}]}", "0.5", "[]", NULL},
    {"{'oneOf':[{'type':'integer'},{'minimum':0}]}", "-0.5", "[['','oneOf']]", NULL},
    {"{'not':{'type':'string'}}", "1", "[]", NULL},
    {"{'not':{'type':'string'}}", "'a'", "[['','not']]", NULL},
    {"{'properties':{'p':{'anyOf':[{'const':1},{'const':2}]}}}", "{'p':3}", "[['/p','anyOf']]",
     NULL},
    /* boolean schemas */
    {"true", "{'anything':[1]}", "[]", NULL},
    {"false", "null", "[['','false']]", NULL},
    {"{}", "[1,'x']", "[]", NULL},
    {"{'properties':{'a':false}}", "{'a':1}", "[['/a','false']]", NULL},
    {"{'items':true}", "[1]", "[]", NULL},
    /* annotations are accepted and do not constrain */
    {"{'$schema':'https://json-schema.org/draft/2020-12/schema','$id':'urn:x','title':'t',"
     "'description':'d','$comment':'c','examples':['x'],'default':'x','type':'integer'}",
     "1", "[]", NULL},
    {"{'default':1,'type':'integer'}", "'x'", "[['','type']]", NULL},
    /* 2020-12 arrays: prefixItems, then items for the rest; contains with its bounds */
    {"{'prefixItems':[{'type':'string'}],'items':{'type':'integer'}}", "['a',1,'b']",
     "[['/2','type']]", NULL},
    {"{'prefixItems':[{'type':'string'}],'items':false}", "['a',1]", "[['','items']]",
     "must have at most 1 items"},
    {"{'uniqueItems':true}", "[1,{'a':1},1.0]", "[['','uniqueItems']]",
     "must not contain duplicates: items 0 and 2 are equal"},
    {"{'uniqueItems':true}", "[1,true,'1']", "[]", NULL},
    {"{'contains':{'type':'integer'},'minContains':2}", "[1,'x']", "[['','contains']]",
     "must contain at least 2 matching items"},
    {"{'contains':{'type':'integer'},'maxContains':1}", "[1,2]", "[['','contains']]",
     "must contain at most 1 matching items"},
    /* objects: patterns, names, dependencies, member counts */
    {"{'patternProperties':{'^n_':{'type':'integer'}},'additionalProperties':false}",
     "{'n_a':1,'n_b':'x','c':1}", "[['/n_b','type'],['/c','additionalProperties']]", NULL},
    {"{'propertyNames':{'maxLength':3}}", "{'abcd':1,'ab':2}", "[['/abcd','maxLength']]", NULL},
    {"{'dependentRequired':{'card':['cvc']}}", "{'card':'x'}", "[['/cvc','dependentRequired']]",
     "is required when 'card' is present"},
    {"{'dependentSchemas':{'card':{'required':['cvc']}}}", "{'card':'x'}", "[['/cvc','required']]",
     NULL},
    {"{'minProperties':1}", "{}", "[['','minProperties']]", "must have at least 1 members"},
    {"{'maxProperties':1}", "{'a':1,'b':2}", "[['','maxProperties']]", NULL},
    /* numbers and strings */
    {"{'multipleOf':0.01}", "19.99", "[]", NULL},
    {"{'multipleOf':3}", "10", "[['','multipleOf']]", "must be a multiple of 3"},
    {"{'pattern':'^\\\\d{3}$'}", "'123'", "[]", NULL},
    {"{'pattern':'^\\\\d{3}$'}", "'123\\n'", "[['','pattern']]", NULL},
    {"{'pattern':'^.$'}", "'\\u00e9'", "[]", NULL},
    {"{'format':'date-time'}", "'2026-02-29T10:00:00Z'", "[['','format']]",
     "must be a valid date-time"},
    {"{'format':'uuid'}", "'0f8fad5b-d9cb-469f-a165-70867728950e'", "[]", NULL},
    {"{'format':'email'}", "'ada@@example.com'", "[['','format']]", NULL},
    /* if / then / else */
    {"{'if':{'properties':{'status':{'const':'done'}}},'then':{'required':['at']},"
     "'else':{'not':{'required':['at']}}}",
     "{'status':'done'}", "[['/at','required']]", NULL},
    {"{'if':{'properties':{'status':{'const':'done'}}},'then':{'required':['at']},"
     "'else':{'not':{'required':['at']}}}",
     "{'status':'open','at':1}", "[['','not']]", NULL},
    /* $ref: to $defs, to the root (recursion), escaped pointers */
    {"{'$defs':{'pos':{'type':'integer','minimum':1}},'properties':{'n':{'$ref':'#/$defs/pos'}}}",
     "{'n':0}", "[['/n','minimum']]", NULL},
    {"{'properties':{'child':{'$ref':'#'}},'required':['name']}", "{'name':1,'child':{'child':{}}}",
     "[['/child/child/name','required'],['/child/name','required']]", NULL},
    {"{'$defs':{'a/b':{'type':'string'}},'$ref':'#/$defs/a~1b'}", "1", "[['','type']]", NULL},
    /* a reference cycle that never descends stops at the depth limit instead of the stack */
    {"{'$defs':{'loop':{'$ref':'#/$defs/loop'}},'$ref':'#/$defs/loop'}", "1", "[['','depth']]",
     "nests deeper than the validator's limit"},

};

/* True when errors holds an object with this pointer and keyword. */
static bool has_error(const json_t *errors, const char *pointer, const char *keyword)
{
    size_t i;
    const json_t *e;
    json_array_foreach(errors, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "pointer")), pointer) == 0 &&
            strcmp(json_string_value(json_object_get(e, "keyword")), keyword) == 0)
            return true;
    }
    return false;
}

START_TEST(instances_validate_against_their_schema)
{
    const vcase *tc = &vcases[_i];
    char err[256] = "";
    json_t *schema = J(tc->schema), *inst = J(tc->instance), *want = J(tc->errors);
    jschema *s = jschema_compile(schema, err, sizeof err);
    ck_assert_msg(s != NULL, "case %d: compile %s: %s", _i, tc->schema, err);
    /* The compiled schema must not depend on the caller's document. */
    json_decref(schema);

    json_t *errors = json_array();
    bool valid = jschema_validate(s, inst, errors);
    char *got = json_dumps(errors, JSON_COMPACT);
    ck_assert_msg(valid == (json_array_size(want) == 0), "case %d: %s on %s: valid=%d errors=%s",
                  _i, tc->schema, tc->instance, valid, got);
    ck_assert_msg(json_array_size(errors) == json_array_size(want), "case %d: errors %s, want %s",
                  _i, got, tc->errors);
    size_t i;
    const json_t *w;
    json_array_foreach(want, i, w)
    {
        const char *pointer = json_string_value(json_array_get(w, 0));
        const char *keyword = json_string_value(json_array_get(w, 1));
        ck_assert_msg(has_error(errors, pointer, keyword), "case %d: missing [%s,%s] in %s", _i,
                      pointer, keyword, got);
    }
    if (tc->message)
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 0), "message")),
                         tc->message);
    /* Without an error array the verdict is the same. */
    ck_assert_int_eq(jschema_validate(s, inst, NULL), valid);

    free(got);
    json_decref(errors);
    json_decref(inst);
    json_decref(want);
    jschema_free(s);
}
END_TEST

/* One schema that must not compile; err must contain both strings. */
typedef struct {
    const char *schema;
    const char *want1;
    const char *want2;
} ccase;

static const ccase ccases[] = {
    {"{'type':'string','format':'ipv4'}", "format 'ipv4' is not supported", "at /format"},
    {"{'properties':{'a':{'minimum':1,'unevaluatedProperties':false}}}", "'unevaluatedProperties'",
     "/properties/a/unevaluatedProperties"},
    {"{'allOf':[{'type':'integer'},{'$ref':'#/x'}]}", "points to nothing", "/allOf/1/$ref"},
    {"{'$ref':'other.json#/a'}", "not a local", "/$ref"},
    {"{'$defs':{'a':{'$anchor':'x'}}}", "'$anchor'", "/$defs/a/$anchor"},
    {"{'$defs':{'a':{'minimum':'x'}}}", "/$defs/a/minimum", "number"},
    {"{'properties':{'x/y':{'nope':1}}}", "'nope'", "/properties/x~1y/nope"},
    {"{'prefixItems':[]}", "/prefixItems", "non-empty"},
    {"{'items':{'$id':'http://example.com/x'}}", "/items/$id", "embedded"},
    {"{'$schema':'http://json-schema.org/draft-07/schema#'}", "/$schema", "2020-12"},
    {"{'multipleOf':0}", "/multipleOf", "greater than 0"},
    {"{'patternProperties':{'(':{}}}", "/patternProperties", "'('"},
    {"{'minContains':-1}", "/minContains", "non-negative integer"},
    {"{'items':[{'type':'string'}]}", "/items", "object or a boolean"},
    {"{'type':'strin'}", "/type", "strin"},
    {"{'type':['string','string']}", "/type", "twice"},
    {"{'type':[]}", "/type", "non-empty"},
    {"{'pattern':'('}", "/pattern", "regular expression"},
    {"{'pattern':5}", "/pattern", "string"},
    {"{'minLength':-1}", "/minLength", "non-negative integer"},
    {"{'maxItems':1.5}", "/maxItems", "non-negative integer"},
    {"{'minimum':'1'}", "/minimum", "number"},
    {"{'required':'a'}", "/required", "array of strings"},
    {"{'required':['a','a']}", "/required", "twice"},
    {"{'enum':[]}", "/enum", "non-empty"},
    {"{'anyOf':{}}", "/anyOf", "non-empty array"},
    {"{'properties':[]}", "/properties", "object"},
    {"{'additionalProperties':1}", "/additionalProperties", "object or a boolean"},
    {"5", "(root)", "object or a boolean"},
};

START_TEST(a_bad_schema_fails_to_compile_with_its_reason)
{
    const ccase *tc = &ccases[_i];
    char err[256] = "";
    json_t *schema = J(tc->schema);
    jschema *s = jschema_compile(schema, err, sizeof err);
    ck_assert_msg(s == NULL, "case %d: %s compiled", _i, tc->schema);
    ck_assert_msg(strstr(err, tc->want1) && strstr(err, tc->want2),
                  "case %d: err '%s' lacks '%s' or '%s'", _i, err, tc->want1, tc->want2);
    json_decref(schema);
}
END_TEST

/* Equality as const and enum see it. */
typedef struct {
    const char *a, *b;
    bool equal;
} ecase;

static const ecase ecases[] = {
    {"1", "1.0", true},
    {"1", "2", false},
    {"1", "'1'", false},
    {"null", "false", false},
    {"{'a':1,'b':2}", "{'b':2,'a':1}", true},
    {"{'a':1}", "{'a':1,'b':2}", false},
    {"{'a':1,'c':2}", "{'a':1,'b':2}", false},
    {"[1,[2]]", "[1.0,[2.0]]", true},
    {"[1,2]", "[2,1]", false},
    {"[]", "{}", false},
    {"'\\u00e9'", "'\\u00e9'", true},
};

START_TEST(json_equality_is_the_one_json_schema_defines)
{
    json_t *a = J(ecases[_i].a), *b = J(ecases[_i].b);
    ck_assert_msg(jschema_equal(a, b) == ecases[_i].equal, "case %d", _i);
    ck_assert_msg(jschema_equal(b, a) == ecases[_i].equal, "case %d reversed", _i);
    json_decref(a);
    json_decref(b);
}
END_TEST

/* Pointer building escapes '~' and '/' (RFC 6901). */
typedef struct {
    const char *base, *token, *want;
} pcase;

static const pcase pcases[] = {
    {NULL, "amount", "/amount"}, {"/a", "b", "/a/b"}, {NULL, "a/b", "/a~1b"},
    {"/x", "m~n", "/x/m~0n"},    {NULL, "", "/"},
};

START_TEST(errors_point_at_the_instance_location)
{
    const pcase *tc = &pcases[_i];
    char *p = jschema_pointer_append(tc->base ? strdup(tc->base) : NULL, tc->token);
    ck_assert_str_eq(p, tc->want);
    free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsonschema");
    TCase *tc = tcase_create("validate");
    tcase_add_loop_test(tc, instances_validate_against_their_schema, 0, N(vcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("compile_error");
    tcase_add_loop_test(tc, a_bad_schema_fails_to_compile_with_its_reason, 0, N(ccases));
    suite_add_tcase(s, tc);
    tc = tcase_create("equal");
    tcase_add_loop_test(tc, json_equality_is_the_one_json_schema_defines, 0, N(ecases));
    suite_add_tcase(s, tc);
    tc = tcase_create("pointer");
    tcase_add_loop_test(tc, errors_point_at_the_instance_location, 0, N(pcases));
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
