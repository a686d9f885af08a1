/* test_domain.c: table-driven tests of domain loading, the shipped domains and merge patch. */
#include "checkrun.h"
#include "domain/domain.h"
#include "domain/jsonpatch.h"
#include "jtext.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static domain_registry *reg;

static const char *schemas_dir(void)
{
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    return dir && *dir ? dir : "schemas/domains";
}

static void load_shipped(void)
{
    char err[512] = "";
    reg = domain_registry_load(schemas_dir(), err, sizeof err);
    if (!reg) {
        fprintf(stderr, "loading %s: %s\n", schemas_dir(), err);
        exit(EXIT_FAILURE);
    }
}

static void free_shipped(void)
{
    domain_registry_free(reg);
    reg = NULL;
}

/* ---- the registry ---- */

typedef struct {
    const char *type;
    const char *aggregate; /* NULL: the command must be unknown */
    const char *event;
} fcase;

static const fcase fcases[] = {
    {"account.open", "account", "account.opened"},
    {"account.deposit", "account", "account.deposited"},
    {"account.withdraw", "account", "account.withdrawn"},
    {"account.close", "account", "account.closed"},
    {"document.create", "document", "document.created"},
    {"document.patch", "document", "document.patched"},
    {"document.delete", "document", "document.deleted"},
    {"cart.create", "cart", "cart.created"},
    {"cart.add_item", "cart", "cart.item_added"},
    {"cart.remove_item", "cart", "cart.item_removed"},
    {"cart.check_out", "cart", "cart.checked_out"},
    {"account.frobnicate", NULL, NULL},
    {"account", NULL, NULL},
    {"", NULL, NULL},
    {"zzz.open", NULL, NULL},
};

START_TEST(commands_are_found_by_type)
{
    const fcase *tc = &fcases[_i];
    const domain_command *c = domain_registry_find(reg, tc->type);
    if (!tc->aggregate) {
        ck_assert_ptr_null(c);
        return;
    }
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(domain_command_type(c), tc->type);
    ck_assert_str_eq(domain_command_aggregate(c), tc->aggregate);
    ck_assert_str_eq(domain_command_event(c), tc->event);
    ck_assert(domain_registry_has_aggregate(reg, tc->aggregate));
}
END_TEST

START_TEST(commands_are_listed_in_type_order)
{
    ck_assert_int_eq(domain_registry_command_count(reg), N(fcases) - 4);
    for (size_t i = 1; i < domain_registry_command_count(reg); i++)
        ck_assert_int_lt(strcmp(domain_command_type(domain_registry_command_at(reg, i - 1)),
                                domain_command_type(domain_registry_command_at(reg, i))),
                         0);
    ck_assert_ptr_null(domain_registry_command_at(reg, domain_registry_command_count(reg)));
    ck_assert(!domain_registry_has_aggregate(reg, "acc"));
    ck_assert(!domain_registry_has_aggregate(reg, "account.open"));
}
END_TEST

static const struct {
    domain_outcome o;
    const char *name;
} ocases[] = {
    {DOMAIN_OK, "ok"},
    {DOMAIN_INVALID_PAYLOAD, "invalid_payload"},
    {DOMAIN_NOT_FOUND, "not_found"},
    {DOMAIN_ALREADY_EXISTS, "already_exists"},
    {DOMAIN_PRECONDITION, "precondition"},
    {DOMAIN_INVARIANT, "invariant"},
    {(domain_outcome)99, "unknown"},
};

START_TEST(every_outcome_has_a_name)
{
    ck_assert_str_eq(domain_outcome_name(ocases[_i].o), ocases[_i].name);
}
END_TEST

/* ---- apply: every shipped command ---- */

/*
 * state NULL means the aggregate is absent. On DOMAIN_OK want is the new state; otherwise it
 * lists the expected errors as [pointer, keyword] pairs, in order.
 */
typedef struct {
    const char *command;
    const char *state;
    const char *payload;
    domain_outcome outcome;
    const char *want;
} acase;

#define OPEN0   "{'owner':'ann','balance':0,'status':'open'}"
#define OPEN100 "{'owner':'ann','balance':100,'status':'open'}"
#define CLOSED  "{'owner':'ann','balance':0,'status':'closed'}"

#define CART0 "{'customer':'ann','currency':'EUR','status':'open','items':{}}"
#define CART_A1                                                                                    \
    "{'customer':'ann','currency':'EUR','status':'open','items':{'A1':{'quantity':2,'unit_price':" \
    "300}}}"
#define CART_DONE                                                                                  \
    "{'customer':'ann','currency':'EUR','status':'checked_out','items':{'A1':{'quantity':2,'unit_" \
    "price':300}}}"

static const acase acases[] = {
    /* account.open */
    {"account.open", NULL, "{'owner':'ann'}", DOMAIN_OK, OPEN0},
    {"account.open", "null", "{'owner':'ann'}", DOMAIN_OK, OPEN0},
    {"account.open", OPEN0, "{'owner':'bob'}", DOMAIN_ALREADY_EXISTS, "[['','requires']]"},
    {"account.open", NULL, "{'owner':''}", DOMAIN_INVALID_PAYLOAD, "[['/owner','minLength']]"},
    {"account.open", NULL, "{}", DOMAIN_INVALID_PAYLOAD, "[['/owner','required']]"},
    {"account.open", NULL, "{'owner':7}", DOMAIN_INVALID_PAYLOAD, "[['/owner','type']]"},
    {"account.open", NULL, "{'owner':'ann','balance':1000}", DOMAIN_INVALID_PAYLOAD,
     "[['/balance','additionalProperties']]"},
    {"account.open", NULL, "[]", DOMAIN_INVALID_PAYLOAD, "[['','type']]"},
    /* account.deposit */
    {"account.deposit", OPEN0, "{'amount':100}", DOMAIN_OK, OPEN100},
    {"account.deposit", OPEN100, "{'amount':2.0}", DOMAIN_OK,
     "{'owner':'ann','balance':102,'status':'open'}"},
    {"account.deposit", NULL, "{'amount':100}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    {"account.deposit", "null", "{'amount':100}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    {"account.deposit", OPEN0, "{'amount':0}", DOMAIN_INVALID_PAYLOAD, "[['/amount','minimum']]"},
    {"account.deposit", OPEN0, "{'amount':-5}", DOMAIN_INVALID_PAYLOAD, "[['/amount','minimum']]"},
    {"account.deposit", OPEN0, "{'amount':1.5}", DOMAIN_INVALID_PAYLOAD, "[['/amount','type']]"},
    {"account.deposit", OPEN0, "{'amount':'5'}", DOMAIN_INVALID_PAYLOAD, "[['/amount','type']]"},
    {"account.deposit", OPEN0, "{}", DOMAIN_INVALID_PAYLOAD, "[['/amount','required']]"},
    {"account.deposit", OPEN0, "{'amount':5,'x':1}", DOMAIN_INVALID_PAYLOAD,
     "[['/x','additionalProperties']]"},
    {"account.deposit", CLOSED, "{'amount':5}", DOMAIN_PRECONDITION, "[['/status','where']]"},
    {"account.deposit", "{'owner':'ann','balance':9223372036854775807,'status':'open'}",
     "{'amount':1}", DOMAIN_INVARIANT, "[['/balance','increment']]"},
    /* account.withdraw */
    {"account.withdraw", OPEN100, "{'amount':30}", DOMAIN_OK,
     "{'owner':'ann','balance':70,'status':'open'}"},
    {"account.withdraw", OPEN100, "{'amount':100}", DOMAIN_OK, OPEN0},
    {"account.withdraw", OPEN100, "{'amount':101}", DOMAIN_INVARIANT, "[['/balance','minimum']]"},
    {"account.withdraw", OPEN0, "{'amount':1}", DOMAIN_INVARIANT, "[['/balance','minimum']]"},
    {"account.withdraw", CLOSED, "{'amount':1}", DOMAIN_PRECONDITION, "[['/status','where']]"},
    {"account.withdraw", NULL, "{'amount':1}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    {"account.withdraw", OPEN100, "{'amount':0}", DOMAIN_INVALID_PAYLOAD,
     "[['/amount','minimum']]"},
    /* account.close */
    {"account.close", OPEN0, "{}", DOMAIN_OK, CLOSED},
    {"account.close", OPEN100, "{}", DOMAIN_PRECONDITION, "[['/balance','where']]"},
    {"account.close", CLOSED, "{}", DOMAIN_PRECONDITION, "[['/status','where']]"},
    {"account.close", "{'owner':'ann','balance':5,'status':'closed'}", "{}", DOMAIN_PRECONDITION,
     "[['/status','where'],['/balance','where']]"},
    {"account.close", NULL, "{}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    {"account.close", OPEN0, "{'reason':'x'}", DOMAIN_INVALID_PAYLOAD,
     "[['/reason','additionalProperties']]"},
    /* document.create: the payload becomes the state, nulls included */
    {"document.create", NULL, "{'title':'a','tags':['x'],'meta':{'n':null}}", DOMAIN_OK,
     "{'title':'a','tags':['x'],'meta':{'n':null}}"},
    {"document.create", NULL, "{}", DOMAIN_OK, "{}"},
    {"document.create", "null", "{'a':1}", DOMAIN_OK, "{'a':1}"},
    {"document.create", "{'a':1}", "{'a':2}", DOMAIN_ALREADY_EXISTS, "[['','requires']]"},
    {"document.create", NULL, "[1]", DOMAIN_INVALID_PAYLOAD, "[['','type']]"},
    {"document.create", NULL, "'text'", DOMAIN_INVALID_PAYLOAD, "[['','type']]"},
    /* document.patch: RFC 7396 Appendix A, the cases whose document and patch are objects */
    {"document.patch", "{'a':'b'}", "{'a':'c'}", DOMAIN_OK, "{'a':'c'}"},
    {"document.patch", "{'a':'b'}", "{'b':'c'}", DOMAIN_OK, "{'a':'b','b':'c'}"},
    {"document.patch", "{'a':'b'}", "{'a':null}", DOMAIN_OK, "{}"},
    {"document.patch", "{'a':'b','b':'c'}", "{'a':null}", DOMAIN_OK, "{'b':'c'}"},
    {"document.patch", "{'a':['b']}", "{'a':'c'}", DOMAIN_OK, "{'a':'c'}"},
    {"document.patch", "{'a':'c'}", "{'a':['b']}", DOMAIN_OK, "{'a':['b']}"},
    {"document.patch", "{'a':{'b':'c'}}", "{'a':{'b':'d','c':null}}", DOMAIN_OK, "{'a':{'b':'d'}}"},
    {"document.patch", "{'a':[{'b':'c'}]}", "{'a':[1]}", DOMAIN_OK, "{'a':[1]}"},
    {"document.patch", "{'e':null}", "{'a':1}", DOMAIN_OK, "{'e':null,'a':1}"},
    {"document.patch", "{}", "{'a':{'bb':{'ccc':null}}}", DOMAIN_OK, "{'a':{'bb':{}}}"},
    {"document.patch", "{'a':1}", "{}", DOMAIN_OK, "{'a':1}"},
    /* ... and patches that are not objects, which would replace the document, are refused */
    {"document.patch", "{'a':'b'}", "['c']", DOMAIN_INVALID_PAYLOAD, "[['','type']]"},
    {"document.patch", "{'a':'foo'}", "null", DOMAIN_INVALID_PAYLOAD, "[['','type']]"},
    {"document.patch", "{'a':'foo'}", "'bar'", DOMAIN_INVALID_PAYLOAD, "[['','type']]"},
    {"document.patch", NULL, "{'a':1}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    {"document.patch", "null", "{'a':1}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    /* cart.create: defaults give an open, empty cart */
    {"cart.create", NULL, "{'customer':'ann','currency':'EUR'}", DOMAIN_OK, CART0},
    {"cart.create", NULL, "{'customer':'ann','currency':'eur'}", DOMAIN_INVALID_PAYLOAD,
     "[['/currency','pattern']]"},
    {"cart.create", CART0, "{'customer':'ann','currency':'EUR'}", DOMAIN_ALREADY_EXISTS,
     "[['','requires']]"},
    /* cart.add_item: merge at /items/{sku}; the SKU names the line and is not stored in it */
    {"cart.add_item", CART0, "{'sku':'A1','quantity':2,'unit_price':300}", DOMAIN_OK, CART_A1},
    {"cart.add_item", CART_A1, "{'sku':'A1','quantity':5,'unit_price':300}", DOMAIN_OK,
     "{'customer':'ann','currency':'EUR','status':'open','items':{'A1':{'quantity':5,"
     "'unit_price':300}}}"},
    {"cart.add_item", CART_A1, "{'sku':'b/2~','quantity':1,'unit_price':0}", DOMAIN_INVALID_PAYLOAD,
     "[['/sku','pattern']]"},
    {"cart.add_item", CART_A1, "{'sku':'B2','quantity':0,'unit_price':1}", DOMAIN_INVALID_PAYLOAD,
     "[['/quantity','minimum']]"},
    {"cart.add_item", CART_DONE, "{'sku':'B2','quantity':1,'unit_price':1}", DOMAIN_PRECONDITION,
     "[['/status','where']]"},
    {"cart.add_item", NULL, "{'sku':'B2','quantity':1,'unit_price':1}", DOMAIN_NOT_FOUND,
     "[['','requires']]"},
    /* cart.remove_item: the line must be there */
    {"cart.remove_item", CART_A1, "{'sku':'A1'}", DOMAIN_OK, CART0},
    {"cart.remove_item", CART_A1, "{'sku':'B2'}", DOMAIN_PRECONDITION, "[['/items/B2','remove']]"},
    {"cart.remove_item", CART_DONE, "{'sku':'A1'}", DOMAIN_PRECONDITION, "[['/status','where']]"},
    /* cart.check_out: only an open cart with items; the state schema's if/then is the invariant */
    {"cart.check_out", CART_A1, "{}", DOMAIN_OK, CART_DONE},
    {"cart.check_out", CART0, "{}", DOMAIN_INVARIANT, "[['/items','minProperties']]"},
    {"cart.check_out", CART_DONE, "{}", DOMAIN_PRECONDITION, "[['/status','where']]"},
    /* document.delete */
    {"document.delete", "{'a':1}", "{}", DOMAIN_OK, "null"},
    {"document.delete", "{}", "{}", DOMAIN_OK, "null"},
    {"document.delete", NULL, "{}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    {"document.delete", "null", "{}", DOMAIN_NOT_FOUND, "[['','requires']]"},
    {"document.delete", "{'a':1}", "{'force':true}", DOMAIN_INVALID_PAYLOAD,
     "[['/force','additionalProperties']]"},
};

START_TEST(a_command_applies_to_its_state_or_says_why_not)
{
    const acase *tc = &acases[_i];
    const domain_command *c = domain_registry_find(reg, tc->command);
    ck_assert_msg(c != NULL, "unknown command %s", tc->command);
    json_t *state = tc->state ? J(tc->state) : NULL, *payload = J(tc->payload);
    json_t *want = J(tc->want), *errors = json_array(), *next = NULL;
    char *before = state ? json_dumps(state, JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;

    domain_outcome o = domain_command_apply(c, state, payload, &next, errors);
    char *got_errors = json_dumps(errors, JSON_COMPACT);
    char *got_state = next ? json_dumps(next, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    ck_assert_msg(o == tc->outcome, "case %d %s: outcome %s, want %s; errors %s", _i, tc->command,
                  domain_outcome_name(o), domain_outcome_name(tc->outcome), got_errors);
    if (o == DOMAIN_OK) {
        ck_assert_msg(json_equal(next, want), "case %d: state %s, want %s", _i, got_state,
                      tc->want);
        ck_assert_int_eq(json_array_size(errors), 0);
    } else {
        ck_assert_ptr_null(next);
        ck_assert_msg(json_array_size(errors) == json_array_size(want),
                      "case %d: errors %s, want %s", _i, got_errors, tc->want);
        for (size_t i = 0; i < json_array_size(want); i++) {
            json_t *e = json_array_get(errors, i), *w = json_array_get(want, i);
            ck_assert_str_eq(json_string_value(json_object_get(e, "pointer")),
                             json_string_value(json_array_get(w, 0)));
            ck_assert_str_eq(json_string_value(json_object_get(e, "keyword")),
                             json_string_value(json_array_get(w, 1)));
            ck_assert_ptr_nonnull(json_string_value(json_object_get(e, "message")));
        }
    }
    /* The current state is borrowed: apply must leave it untouched. */
    if (state) {
        char *after = json_dumps(state, JSON_ENCODE_ANY | JSON_SORT_KEYS);
        ck_assert_str_eq(after, before);
        free(after);
    }
    /* Without an error array the outcome is the same. */
    json_t *again = NULL;
    ck_assert_int_eq(domain_command_apply(c, state, payload, &again, NULL), o);
    ck_assert(o == DOMAIN_OK ? json_equal(again, next) : again == NULL);
    /* The payload validation step agrees with apply. */
    ck_assert_int_eq(domain_command_validate(c, payload, NULL), o != DOMAIN_INVALID_PAYLOAD);

    json_decref(again);
    free(before);
    free(got_errors);
    free(got_state);
    json_decref(next);
    json_decref(errors);
    json_decref(want);
    json_decref(payload);
    json_decref(state);
}
END_TEST

/* ---- merge patch: RFC 7396 Appendix A, every case ---- */

static const struct {
    const char *target, *patch, *want;
} mcases[] = {
    {"{'a':'b'}", "{'a':'c'}", "{'a':'c'}"},
    {"{'a':'b'}", "{'b':'c'}", "{'a':'b','b':'c'}"},
    {"{'a':'b'}", "{'a':null}", "{}"},
    {"{'a':'b','b':'c'}", "{'a':null}", "{'b':'c'}"},
    {"{'a':['b']}", "{'a':'c'}", "{'a':'c'}"},
    {"{'a':'c'}", "{'a':['b']}", "{'a':['b']}"},
    {"{'a':{'b':'c'}}", "{'a':{'b':'d','c':null}}", "{'a':{'b':'d'}}"},
    {"{'a':[{'b':'c'}]}", "{'a':[1]}", "{'a':[1]}"},
    {"['a','b']", "['c','d']", "['c','d']"},
    {"{'a':'b'}", "['c']", "['c']"},
    {"{'a':'foo'}", "null", "null"},
    {"{'a':'foo'}", "'bar'", "'bar'"},
    {"{'e':null}", "{'a':1}", "{'e':null,'a':1}"},
    {"[1,2]", "{'a':'b','c':null}", "{'a':'b'}"},
    {"{}", "{'a':{'bb':{'ccc':null}}}", "{'a':{'bb':{}}}"},
    /* an absent target behaves as a non-object one */
    {NULL, "{'a':{'b':null,'c':1}}", "{'a':{'c':1}}"},
};

START_TEST(merge_patch_follows_rfc_7396)
{
    json_t *target = mcases[_i].target ? J(mcases[_i].target) : NULL;
    json_t *patch = J(mcases[_i].patch), *want = J(mcases[_i].want);
    char *target_before = target ? json_dumps(target, JSON_ENCODE_ANY) : NULL;
    json_t *got = jsonpatch_merge(target, patch);
    char *text = json_dumps(got, JSON_ENCODE_ANY);
    ck_assert_msg(json_equal(got, want), "case %d: got %s, want %s", _i, text, mcases[_i].want);
    /* The result shares nothing with its inputs: changing it leaves them alone. */
    if (json_is_object(got))
        json_object_clear(got);
    if (target) {
        char *target_after = json_dumps(target, JSON_ENCODE_ANY);
        ck_assert_str_eq(target_after, target_before);
        free(target_after);
    }
    json_t *patch_again = J(mcases[_i].patch);
    ck_assert(json_equal(patch, patch_again));
    json_decref(patch_again);
    free(text);
    free(target_before);
    json_decref(got);
    json_decref(want);
    json_decref(patch);
    json_decref(target);
}
END_TEST

/* ---- bad domain files ---- */

/*
 * Files written to a fresh directory (second may be NULL); loading must fail with err naming
 * the file and containing want.
 */
typedef struct {
    const char *name1, *text1;
    const char *name2, *text2;
    const char *bad_file; /* the file err must start with; NULL: the directory */
    const char *want;
} bcase;

#define GOOD_X                                                                                     \
    "{'aggregate':'x','state':{'type':'object'},'commands':{'x.y':{'event':'x.yed',"               \
    "'payload':{'type':'object'},'rule':{'requires':'any','op':'merge'}}}}"
#define X_WITH(cmd)  "{'aggregate':'x','state':{'type':'object'},'commands':{" cmd "}}"
#define X_RULE(rule) X_WITH("'x.y':{'event':'x.yed','payload':{},'rule':" rule "}")

static const bcase bcases[] = {
    {"x.json", X_RULE("{'requires':'any','op':'remove'}"), NULL, NULL, "x.json",
     "x.json: commands.x.y.rule.at: missing (op 'remove' needs the path"},
    {"x.json", X_RULE("{'requires':'any','op':'merge','at':'items'}"), NULL, NULL, "x.json",
     "x.json: commands.x.y.rule.at: must be a path"},
    {"x.json", X_RULE("{'requires':'any','op':'merge','at':'/items/{sku}'}"), NULL, NULL, "x.json",
     "x.json: commands.x.y.rule.at: '{sku}' needs 'sku' in the payload schema's \"required\""},
    {"x.json", X_RULE("{'requires':'any','op':'remove','at':'/items/x{sku}'}"), NULL, NULL,
     "x.json", "x.json: commands.x.y.rule.at: '/items/x{sku}': each token is a member name"},
    {"x.json", X_RULE("{'requires':'any','op':'set','values':{},'at':'/a'}"), NULL, NULL, "x.json",
     "x.json: commands.x.y.rule: unknown key 'at' for op 'set'"},
    {"x.json", X_RULE("{'requires':'any','op':'frobnicate'}"), NULL, NULL, "x.json",
     "x.json: commands.x.y.rule.op: unknown op 'frobnicate'"},
    {"x.json",
     X_WITH("'x.y':{'event':'x.yed','payload':{'type':'object','$anchor':'p'},"
            "'rule':{'requires':'any','op':'merge'}}"),
     NULL, NULL, "x.json",
     "x.json: commands.x.y.payload: unsupported keyword '$anchor' at /$anchor"},
    {"x.json",
     "{'aggregate':'x','state':{'type':'object','properties':{'n':{'unevaluatedItems':false}}},"
     "'commands':{'x.y':{'event':'x.yed','payload':{},'rule':{'requires':'any','op':'merge'}}}}",
     NULL, NULL, "x.json",
     "x.json: state: unsupported keyword 'unevaluatedItems' at /properties/n"},
    {"x.json",
     X_WITH("'y.z':{'event':'x.yed','payload':{},'rule':{'requires':'any','op':'merge'}}"), NULL,
     NULL, "x.json", "x.json: commands.y.z: command type must be 'x.<name>'"},
    {"x.json", X_WITH("'x':{'event':'x.yed','payload':{},'rule':{'requires':'any','op':'merge'}}"),
     NULL, NULL, "x.json", "commands.x: command type"},
    {"x.json",
     X_WITH("'x.Y':{'event':'x.yed','payload':{},'rule':{'requires':'any','op':'merge'}}"), NULL,
     NULL, "x.json", "commands.x.Y: command type"},
    {"x.json",
     X_WITH("'x.y':{'event':'z.yed','payload':{},'rule':{'requires':'any','op':'merge'}}"), NULL,
     NULL, "x.json", "commands.x.y.event: must be a string 'x.<name>'"},
    {"x.json", X_WITH("'x.y':{'payload':{},'rule':{'requires':'any','op':'merge'}}"), NULL, NULL,
     "x.json", "commands.x.y.event"},
    {"x.json", X_WITH("'x.y':{'event':'x.yed','rule':{'requires':'any','op':'merge'}}"), NULL, NULL,
     "x.json", "commands.x.y.payload: missing"},
    {"x.json", X_WITH("'x.y':{'event':'x.yed','payload':{}}"), NULL, NULL, "x.json",
     "commands.x.y.rule: must be an object"},
    {"x.json",
     X_WITH("'x.y':{'event':'x.yed','payload':{},'rule':{'requires':'any','op':'merge'},'x':1}"),
     NULL, NULL, "x.json", "commands.x.y: unknown key 'x'"},
    {"x.json", X_RULE("{'requires':'any','op':'merge','field':'a'}"), NULL, NULL, "x.json",
     "commands.x.y.rule: unknown key 'field' for op 'merge'"},
    {"x.json", X_RULE("{'requires':'any','op':'create','defaults':{},'by':'a'}"), NULL, NULL,
     "x.json", "unknown key 'by' for op 'create'"},
    {"x.json", X_RULE("{'op':'merge'}"), NULL, NULL, "x.json", "commands.x.y.rule.requires"},
    {"x.json", X_RULE("{'requires':'maybe','op':'merge'}"), NULL, NULL, "x.json",
     "commands.x.y.rule.requires: unknown value 'maybe'"},
    {"x.json", X_RULE("{'requires':'any'}"), NULL, NULL, "x.json", "commands.x.y.rule.op: missing"},
    {"x.json", X_RULE("{'requires':'absent','op':'create','where':{'a':1}}"), NULL, NULL, "x.json",
     "commands.x.y.rule.where: needs"},
    {"x.json", X_RULE("{'requires':'present','op':'merge','where':[]}"), NULL, NULL, "x.json",
     "commands.x.y.rule.where: must be an object"},
    {"x.json", X_RULE("{'requires':'present','op':'increment','field':'n'}"), NULL, NULL, "x.json",
     "commands.x.y.rule.by: missing"},
    {"x.json", X_RULE("{'requires':'present','op':'decrement','by':'n'}"), NULL, NULL, "x.json",
     "commands.x.y.rule.field: missing"},
    {"x.json", X_RULE("{'requires':'present','op':'set'}"), NULL, NULL, "x.json",
     "commands.x.y.rule.values: missing"},
    {"x.json", X_RULE("{'requires':'absent','op':'create','defaults':5}"), NULL, NULL, "x.json",
     "commands.x.y.rule.defaults: must be an object"},
    {"x.json", "{'aggregate':'y','state':{'type':'object'},'commands':{}}", NULL, NULL, "x.json",
     "x.json: aggregate: must be a string"},
    {"x.json", "{'state':{'type':'object'},'commands':{}}", NULL, NULL, "x.json", "aggregate"},
    {"x.json", "{'aggregate':'x','state':{'type':'object'},'commands':{}}", NULL, NULL, "x.json",
     "x.json: commands: must be a non-empty object"},
    {"x.json", "{'aggregate':'x','commands':{}}", NULL, NULL, "x.json", "x.json: state: missing"},
    {"x.json", "{'aggregate':'x','state':{},'commands':{}}", NULL, NULL, "x.json",
     "x.json: state: must reject null"},
    {"x.json", "{'aggregate':'x','comands':{}}", NULL, NULL, "x.json",
     "x.json: unknown key 'comands'"},
    {"x.json", "{'aggregate':'x',", NULL, NULL, "x.json", "x.json: line"},
    {"x.json", "{'aggregate':'x','aggregate':'x'}", NULL, NULL, "x.json", "duplicate"},
    {"x.json", "[1]", NULL, NULL, "x.json", "x.json: must hold a JSON object"},
    /* a good file first, then a bad one: the error names the bad one */
    {"a.json", "{'aggregate':'a','state':true,'commands':{}}", "x.json", GOOD_X, "a.json",
     "a.json: state: must reject null"},
    {"x.json", GOOD_X, "z.json", "{'aggregate':'z','state':{'type':'object'},'commands':5}",
     "z.json", "z.json: commands: must be a non-empty object"},
    /* no domain files at all; other files are ignored */
    {"README.md", "not json", NULL, NULL, NULL, "no *.json domain files"},
};

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (const char *p = text; *p; p++)
        fputc(*p == '\'' ? '"' : *p, f);
    fclose(f);
}

static void remove_file(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

START_TEST(a_bad_domain_file_is_refused_with_its_reason)
{
    const bcase *tc = &bcases[_i];
    char dir[] = "/tmp/test_domain.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    write_file(dir, tc->name1, tc->text1);
    if (tc->name2)
        write_file(dir, tc->name2, tc->text2);

    char err[512] = "";
    domain_registry *r = domain_registry_load(dir, err, sizeof err);
    remove_file(dir, tc->name1);
    if (tc->name2)
        remove_file(dir, tc->name2);
    rmdir(dir);

    ck_assert_msg(r == NULL, "case %d loaded", _i);
    char file[600];
    if (tc->bad_file)
        snprintf(file, sizeof file, "%s/%s", dir, tc->bad_file);
    else
        snprintf(file, sizeof file, "%s", dir);
    ck_assert_msg(strncmp(err, file, strlen(file)) == 0, "case %d: err '%s' does not start '%s'",
                  _i, err, file);
    ck_assert_msg(strstr(err, tc->want) != NULL, "case %d: err '%s' lacks '%s'", _i, err, tc->want);
}
END_TEST

START_TEST(a_missing_domain_folder_is_named)
{
    char err[512] = "";
    domain_registry *r = domain_registry_load("/nonexistent/domains", err, sizeof err);
    ck_assert_ptr_null(r);
    ck_assert_msg(strstr(err, "/nonexistent/domains") != NULL, "err '%s'", err);
}
END_TEST

/* The good file used by the bad-file cases loads, so those failures are the intended ones. */
START_TEST(a_good_domain_file_loads)
{
    char dir[] = "/tmp/test_domain.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    write_file(dir, "x.json", GOOD_X);
    write_file(dir, "notes.txt", "ignored");
    char err[512] = "";
    domain_registry *r = domain_registry_load(dir, err, sizeof err);
    remove_file(dir, "x.json");
    remove_file(dir, "notes.txt");
    rmdir(dir);
    ck_assert_msg(r != NULL, "err '%s'", err);
    ck_assert_int_eq(domain_registry_command_count(r), 1);
    ck_assert_ptr_nonnull(domain_registry_find(r, "x.y"));
    ck_assert(domain_registry_has_aggregate(r, "x"));
    domain_registry_free(r);
}
END_TEST

int main(void)
{
    load_shipped();
    Suite *s = suite_create("domain");
    TCase *tc = tcase_create("registry");
    tcase_add_loop_test(tc, commands_are_found_by_type, 0, N(fcases));
    tcase_add_test(tc, commands_are_listed_in_type_order);
    tcase_add_loop_test(tc, every_outcome_has_a_name, 0, N(ocases));
    suite_add_tcase(s, tc);
    tc = tcase_create("apply");
    tcase_add_loop_test(tc, a_command_applies_to_its_state_or_says_why_not, 0, N(acases));
    suite_add_tcase(s, tc);
    tc = tcase_create("merge_patch");
    tcase_add_loop_test(tc, merge_patch_follows_rfc_7396, 0, N(mcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("load");
    tcase_add_loop_test(tc, a_bad_domain_file_is_refused_with_its_reason, 0, N(bcases));
    tcase_add_test(tc, a_missing_domain_folder_is_named);
    tcase_add_test(tc, a_good_domain_file_loads);
    suite_add_tcase(s, tc);

    int failed = check_run(s, CK_FORK_GETENV);
    free_shipped();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
