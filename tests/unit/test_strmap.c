/* test_strmap.c: table-driven tests of the string hash map, from empty to 10000 keys. */
#include "checkrun.h"
#include "core/strmap.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- bulk: put, get, replace, remove, size and each for n keys ---- */

/* Sizes around the initial 16 buckets and several doublings. */
static const int sizes[] = {0, 1, 15, 16, 17, 33, 1000, 10000};

static void key_of(int i, char *buf, size_t len)
{
    snprintf(buf, len, "key-%d", i);
}

/* strmap_each records every visit: seen[i] counts visits of key i, values checked on the way. */
typedef struct {
    int n;
    int *seen;
    int *vals_a, *vals_b;
    int visits;
    int bad;
} walk;

static void visit(const char *key, void *value, void *arg)
{
    walk *w = arg;
    int i;
    w->visits++;
    if (sscanf(key, "key-%d", &i) != 1 || i < 0 || i >= w->n) {
        w->bad++;
        return;
    }
    w->seen[i]++;
    /* Even keys were replaced with vals_b, odd keys keep vals_a. */
    if (value != (i % 2 ? (void *)&w->vals_a[i] : (void *)&w->vals_b[i]))
        w->bad++;
}

START_TEST(keys_are_put_found_and_removed_in_bulk)
{
    int n = sizes[_i];
    int *a = calloc((size_t)n + 1, sizeof(int));
    int *b = calloc((size_t)n + 1, sizeof(int));
    strmap *m = strmap_new();
    char key[32];
    ck_assert_uint_eq(strmap_size(m), 0);

    for (int i = 0; i < n; i++) {
        key_of(i, key, sizeof(key));
        ck_assert_ptr_null(strmap_put(m, key, &a[i]));
        ck_assert_uint_eq(strmap_size(m), (size_t)i + 1);
    }
    /* Every key survives growth. */
    for (int i = 0; i < n; i++) {
        key_of(i, key, sizeof(key));
        ck_assert_ptr_eq(strmap_get(m, key), &a[i]);
    }
    key_of(n, key, sizeof(key));
    ck_assert_ptr_null(strmap_get(m, key));

    /* Replacing returns the old value and leaves the size alone. */
    for (int i = 0; i < n; i += 2) {
        key_of(i, key, sizeof(key));
        ck_assert_ptr_eq(strmap_put(m, key, &b[i]), &a[i]);
    }
    ck_assert_uint_eq(strmap_size(m), (size_t)n);
    for (int i = 0; i < n; i++) {
        key_of(i, key, sizeof(key));
        ck_assert_ptr_eq(strmap_get(m, key), i % 2 ? &a[i] : &b[i]);
    }

    walk w = {.n = n, .seen = calloc((size_t)n + 1, sizeof(int)), .vals_a = a, .vals_b = b};
    strmap_each(m, visit, &w);
    ck_assert_int_eq(w.visits, n);
    ck_assert_int_eq(w.bad, 0);
    for (int i = 0; i < n; i++)
        ck_assert_msg(w.seen[i] == 1, "key-%d visited %d times", i, w.seen[i]);

    /* Remove every third key; removing again finds nothing. */
    int removed = 0;
    for (int i = 0; i < n; i += 3) {
        key_of(i, key, sizeof(key));
        ck_assert_ptr_eq(strmap_remove(m, key), i % 2 ? &a[i] : &b[i]);
        ck_assert_ptr_null(strmap_remove(m, key));
        removed++;
    }
    ck_assert_uint_eq(strmap_size(m), (size_t)(n - removed));
    for (int i = 0; i < n; i++) {
        key_of(i, key, sizeof(key));
        void *want = i % 3 == 0 ? NULL : i % 2 ? (void *)&a[i] : (void *)&b[i];
        ck_assert_ptr_eq(strmap_get(m, key), want);
    }
    memset(w.seen, 0, ((size_t)n + 1) * sizeof(int));
    w.visits = 0;
    strmap_each(m, visit, &w);
    ck_assert_int_eq(w.visits, n - removed);
    ck_assert_int_eq(w.bad, 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(w.seen[i], i % 3 == 0 ? 0 : 1);

    /* Removed keys can come back. */
    for (int i = 0; i < n; i += 3) {
        key_of(i, key, sizeof(key));
        ck_assert_ptr_null(strmap_put(m, key, &a[i]));
        ck_assert_ptr_eq(strmap_get(m, key), &a[i]);
    }
    ck_assert_uint_eq(strmap_size(m), (size_t)n);

    free(w.seen);
    strmap_free(m);
    free(a);
    free(b);
}
END_TEST

/* ---- awkward keys: each is put among the others and must be told apart from them ---- */

static char long_key[4097];

static const char *const keys[] = {
    "",       "a",   "A",    "a ",    " a",     "ab",    "ba", "caf\xc3\xa9",
    "cafe",   "key", "key-", "key-1", "key-10", "k\xff", "/",  "tenant/account/1",
    long_key,
};

START_TEST(any_key_is_stored_as_given)
{
    memset(long_key, 'x', sizeof(long_key) - 1);
    strmap *m = strmap_new();
    int vals[N(keys)];
    for (int i = 0; i < N(keys); i++)
        ck_assert_ptr_null(strmap_put(m, keys[i], &vals[i]));
    ck_assert_uint_eq(strmap_size(m), (size_t)N(keys));
    /* The key is copied: changing the caller's buffer changes nothing. */
    char copy[8] = "mutable";
    ck_assert_ptr_null(strmap_put(m, copy, &vals[0]));
    copy[0] = 'M';
    ck_assert_ptr_eq(strmap_get(m, "mutable"), &vals[0]);
    ck_assert_ptr_null(strmap_get(m, copy));
    ck_assert_ptr_eq(strmap_remove(m, "mutable"), &vals[0]);

    ck_assert_ptr_eq(strmap_get(m, keys[_i]), &vals[_i]);
    ck_assert_ptr_eq(strmap_remove(m, keys[_i]), &vals[_i]);
    ck_assert_ptr_null(strmap_get(m, keys[_i]));
    ck_assert_uint_eq(strmap_size(m), (size_t)N(keys) - 1);
    for (int i = 0; i < N(keys); i++) {
        if (i != _i)
            ck_assert_msg(strmap_get(m, keys[i]) == &vals[i], "removing '%.20s' lost '%.20s'",
                          keys[_i], keys[i]);
    }
    strmap_free(m);
}
END_TEST

/* A NULL value is stored like any other: it counts in the size. */
START_TEST(a_null_value_counts_like_any_other)
{
    strmap *m = strmap_new();
    int v;
    ck_assert_ptr_null(strmap_put(m, "k", NULL));
    ck_assert_uint_eq(strmap_size(m), 1);
    ck_assert_ptr_null(strmap_put(m, "k", &v));
    ck_assert_uint_eq(strmap_size(m), 1);
    ck_assert_ptr_eq(strmap_get(m, "k"), &v);
    ck_assert_ptr_eq(strmap_remove(m, "k"), &v);
    ck_assert_uint_eq(strmap_size(m), 0);
    strmap_free(m);
    strmap_free(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("strmap");
    TCase *tc = tcase_create("strmap");
    tcase_add_loop_test(tc, keys_are_put_found_and_removed_in_bulk, 0, N(sizes));
    tcase_add_loop_test(tc, any_key_is_stored_as_given, 0, N(keys));
    tcase_add_test(tc, a_null_value_counts_like_any_other);
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
