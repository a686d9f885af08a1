/* test_config.c: table-driven tests of configuration precedence, pass-through keys and errors. */
#include "checkrun.h"
#include "core/config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A small binary's configuration: one key of each type, one with '_' and one without default. */
typedef struct {
    char *host;
    long long port;
    long long timeout_ms;
    bool verbose;
    char *prefix;
    bool dry_run;
} tconf;

static const config_row table[] = {
    {"http.host", CONFIG_STR, offsetof(tconf, host), "127.0.0.1", 0, 0, "address to listen on"},
    {"http.port", CONFIG_INT, offsetof(tconf, port), "8080", 0, 65535, "port to listen on"},
    {"sync.timeout_ms", CONFIG_INT, offsetof(tconf, timeout_ms), "5000", 1, 600000, "wait"},
    {"log.verbose", CONFIG_BOOL, offsetof(tconf, verbose), "false", 0, 0, "log more"},
    {"topic.prefix", CONFIG_STR, offsetof(tconf, prefix), NULL, 0, 0, "topic name prefix"},
    {"dry_run", CONFIG_BOOL, offsetof(tconf, dry_run), "false", 0, 0, "change nothing"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

/* ---- per case: every CQRS_* variable saved, cleared and restored; the temporary file removed */

/* The temporary config file of the running case; removed in teardown, even after a failure. */
static char temp_path[64];

static char **saved_env;
static size_t nsaved_env;

extern char **environ;

static void unset_all_cqrs(void)
{
    /* Collect names first: unsetenv() rearranges environ. */
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **names = calloc(n + 1, sizeof(char *));
    size_t k = 0;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CQRS_", 5) == 0)
            names[k++] = strndup(*e, strcspn(*e, "="));
    }
    for (size_t i = 0; i < k; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
    free(names);
}

static void case_setup(void)
{
    snprintf(temp_path, sizeof(temp_path), "/nonexistent/no-file");
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    saved_env = calloc(n + 1, sizeof(char *));
    nsaved_env = 0;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CQRS_", 5) == 0)
            saved_env[nsaved_env++] = strdup(*e);
    }
    unset_all_cqrs();
}

static void case_teardown(void)
{
    if (strncmp(temp_path, "/tmp/", 5) == 0)
        unlink(temp_path);
    snprintf(temp_path, sizeof(temp_path), "/nonexistent/no-file");
    unset_all_cqrs();
    for (size_t i = 0; i < nsaved_env; i++) {
        char *eq = strchr(saved_env[i], '=');
        *eq = '\0';
        setenv(saved_env[i], eq + 1, 1);
        free(saved_env[i]);
    }
    free(saved_env);
    saved_env = NULL;
    nsaved_env = 0;
}

/* ---- helpers ---- */

/* Replaces every "@FILE@" in s with path; caller frees. */
static char *subst(const char *s, const char *path)
{
    static const char mark[] = "@FILE@";
    size_t cap = strlen(s) + 1, len = 0;
    for (const char *p = strstr(s, mark); p; p = strstr(p + 1, mark))
        cap += strlen(path);
    char *out = malloc(cap);
    while (*s) {
        if (strncmp(s, mark, sizeof(mark) - 1) == 0) {
            memcpy(out + len, path, strlen(path));
            len += strlen(path);
            s += sizeof(mark) - 1;
        } else {
            out[len++] = *s++;
        }
    }
    out[len] = '\0';
    return out;
}

/* Writes text to a new temporary file; returns its path in buf. */
static void write_temp(char *buf, size_t buflen, const char *text)
{
    snprintf(buf, buflen, "/tmp/test_config.XXXXXX");
    int fd = mkstemp(buf);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* The value of one row as text, so every field can be compared with the table's strings. */
static void field_text(const config_row *r, const tconf *c, char *buf, size_t buflen)
{
    const char *field = (const char *)c + r->offset;
    switch (r->type) {
    case CONFIG_STR:
        snprintf(buf, buflen, "%s", *(char *const *)(const void *)field);
        return;
    case CONFIG_INT:
        snprintf(buf, buflen, "%lld", *(const long long *)(const void *)field);
        return;
    case CONFIG_BOOL:
        snprintf(buf, buflen, "%s", *(const bool *)(const void *)field ? "true" : "false");
        return;
    }
}

/* ---- config_load ---- */

typedef struct {
    const char *name;
    const char *file;    /* contents of a temporary file named @FILE@ elsewhere, or NULL */
    const char *env[4];  /* "NAME=value" */
    const char *argv[5]; /* after argv[0] */
    config_result result;
    const char *want[5]; /* CONFIG_LOADED: "key=value" overrides; other rows keep defaults */
    const char *props;   /* CONFIG_LOADED: "k=v;k=v" in order */
    const char *err[2];  /* CONFIG_FAILED: substrings of err */
} lcase;

static const lcase lcases[] = {
    {.name = "defaults", .result = CONFIG_LOADED, .props = ""},

    /* the file, named by the flag or by CQRS_CONFIG */
    {.name = "file by flag",
     .file = "# comment\n\nhttp.port = 9000\n  log.verbose=yes  \ntopic.prefix =dev.\n",
     .argv = {"--config=@FILE@"},
     .result = CONFIG_LOADED,
     .want = {"http.port=9000", "log.verbose=true", "topic.prefix=dev."},
     .props = ""},
    {.name = "file by CQRS_CONFIG",
     .file = "http.host = 0.0.0.0\nsync.timeout_ms = 250\n",
     .env = {"CQRS_CONFIG=@FILE@"},
     .result = CONFIG_LOADED,
     .want = {"http.host=0.0.0.0", "sync.timeout_ms=250"},
     .props = ""},
    {.name = "--config beats CQRS_CONFIG",
     .file = "http.port = 9001\n",
     .env = {"CQRS_CONFIG=/nonexistent/cqrs.conf"},
     .argv = {"--config=@FILE@"},
     .result = CONFIG_LOADED,
     .want = {"http.port=9001"},
     .props = ""},
    {.name = "empty --config= disables CQRS_CONFIG",
     .env = {"CQRS_CONFIG=/nonexistent/cqrs.conf"},
     .argv = {"--config="},
     .result = CONFIG_LOADED,
     .props = ""},
    {.name = "file value keeps inner '='",
     .file = "topic.prefix = a=b\n",
     .argv = {"--config=@FILE@"},
     .result = CONFIG_LOADED,
     .want = {"topic.prefix=a=b"},
     .props = ""},
    {.name = "later file line wins",
     .file = "http.port = 1\nhttp.port = 2\n",
     .argv = {"--config=@FILE@"},
     .result = CONFIG_LOADED,
     .want = {"http.port=2"},
     .props = ""},

    /* precedence: default < file < environment < flag */
    {.name = "env beats default",
     .env = {"CQRS_HTTP_PORT=9100", "CQRS_LOG_VERBOSE=ON"},
     .result = CONFIG_LOADED,
     .want = {"http.port=9100", "log.verbose=true"},
     .props = ""},
    {.name = "env beats file",
     .file = "http.port = 9000\nhttp.host = filehost\n",
     .env = {"CQRS_HTTP_PORT=9100"},
     .argv = {"--config=@FILE@"},
     .result = CONFIG_LOADED,
     .want = {"http.port=9100", "http.host=filehost"},
     .props = ""},
    {.name = "flag beats env and file",
     .file = "http.port = 9000\ntopic.prefix = f.\n",
     .env = {"CQRS_HTTP_PORT=9100", "CQRS_TOPIC_PREFIX=e."},
     .argv = {"--config=@FILE@", "--http.port=9200"},
     .result = CONFIG_LOADED,
     .want = {"http.port=9200", "topic.prefix=e."},
     .props = ""},
    {.name = "last flag wins",
     .argv = {"--http.port=1", "--http.port=2"},
     .result = CONFIG_LOADED,
     .want = {"http.port=2"},
     .props = ""},
    {.name = "flag value keeps inner '=' and may be empty",
     .argv = {"--http.host=a=b", "--topic.prefix="},
     .result = CONFIG_LOADED,
     .want = {"http.host=a=b", "topic.prefix="},
     .props = ""},
    {.name = "key with '_' by flag and file",
     .file = "sync.timeout_ms = 7\n",
     .argv = {"--config=@FILE@", "--log.verbose=1"},
     .result = CONFIG_LOADED,
     .want = {"sync.timeout_ms=7", "log.verbose=true"},
     .props = ""},
    /*
     * Regression (common/core/config.c env_to_key), as it was before the fix: every '_' becomes
     * '.', so CQRS_SYNC_TIMEOUT_MS is looked up as "sync.timeout.ms" and fails as an unknown key,
     * although config_usage() advertises exactly that variable. Real keys such as http.max_body and
     * sync.timeout_ms are affected.
     */
    {.name = "key with '_' by environment",
     .env = {"CQRS_SYNC_TIMEOUT_MS=7"},
     .result = CONFIG_LOADED,
     .want = {"sync.timeout_ms=7"},
     .props = ""},

    /* booleans and integer bounds */
    {.name = "booleans true",
     .argv = {"--log.verbose=TRUE"},
     .result = CONFIG_LOADED,
     .want = {"log.verbose=true"},
     .props = ""},
    {.name = "booleans false",
     .env = {"CQRS_LOG_VERBOSE=on"},
     .argv = {"--log.verbose=Off"},
     .result = CONFIG_LOADED,
     .want = {"log.verbose=false"},
     .props = ""},
    {.name = "a boolean flag alone is true, over the environment",
     .env = {"CQRS_LOG_VERBOSE=no"},
     .argv = {"--log.verbose"},
     .result = CONFIG_LOADED,
     .want = {"log.verbose=true"},
     .props = ""},
    {.name = "a boolean flag alone, then =false: the last one wins",
     .argv = {"--log.verbose", "--log.verbose=false"},
     .result = CONFIG_LOADED,
     .want = {"log.verbose=false"},
     .props = ""},
    {.name = "a key's variable has its name in upper case",
     .env = {"CQRS_DRY_RUN=yes"},
     .result = CONFIG_LOADED,
     .want = {"dry_run=true"},
     .props = ""},
    {.name = "a dash in a key is taken for an underscore, in a flag alone, a flag or a file",
     .file = "sync.timeout-ms = 7\n",
     .argv = {"--config=@FILE@", "--dry-run", "--http.port=1"},
     .result = CONFIG_LOADED,
     .want = {"dry_run=true", "sync.timeout_ms=7", "http.port=1"},
     .props = ""},
    {.name = "a dash is no dot",
     .argv = {"--http-port=1"},
     .result = CONFIG_FAILED,
     .err = {"unknown configuration key 'http-port'"}},
    {.name = "booleans no",
     .file = "log.verbose = yes\n",
     .argv = {"--config=@FILE@", "--log.verbose=no"},
     .result = CONFIG_LOADED,
     .want = {"log.verbose=false"},
     .props = ""},
    {.name = "int at min and max",
     .argv = {"--http.port=0", "--sync.timeout_ms=600000"},
     .result = CONFIG_LOADED,
     .want = {"http.port=0", "sync.timeout_ms=600000"},
     .props = ""},

    /* kafka.* keys pass through, in order, later sources replacing earlier values in place */
    {.name = "kafka pass-through",
     .file = "kafka.bootstrap.servers = a:9092\nkafka.acks = all\n",
     .env = {"CQRS_KAFKA_CLIENT_ID=cid"},
     .argv = {"--config=@FILE@", "--kafka.acks=1", "--kafka.linger.ms=5"},
     .result = CONFIG_LOADED,
     .props = "bootstrap.servers=a:9092;acks=1;client.id=cid;linger.ms=5"},
    {.name = "kafka. alone is not a pass-through key",
     .argv = {"--kafka.=x"},
     .result = CONFIG_FAILED,
     .err = {"kafka."}},

    /* variables of other tools are ignored */
    {.name = "tooling variables ignored",
     .env = {"CQRS_SCHEMAS_DIR=/x", "CQRS_TEST_ANYTHING=1", "CQRS_BUILD=b", "CQRS_REPO=r"},
     .result = CONFIG_LOADED,
     .props = ""},

    /* --help */
    {.name = "--help", .argv = {"--help"}, .result = CONFIG_HELP},
    {.name = "-h", .argv = {"-h"}, .result = CONFIG_HELP},
    {.name = "--help wins over a bad flag", .argv = {"--bogus=1", "--help"}, .result = CONFIG_HELP},

    /* errors name the key and the source */
    {.name = "unknown flag",
     .argv = {"--http.prot=1"},
     .result = CONFIG_FAILED,
     .err = {"http.prot", "command line"}},
    {.name = "unknown file key",
     .file = "http.port = 1\nhttp.prot = 1\n",
     .argv = {"--config=@FILE@"},
     .result = CONFIG_FAILED,
     .err = {"http.prot", "@FILE@:2"}},
    {.name = "unknown env key",
     .env = {"CQRS_HTTP_PROT=1"},
     .result = CONFIG_FAILED,
     .err = {"http.prot", "CQRS_HTTP_PROT"}},
    {.name = "non-integer flag",
     .argv = {"--http.port=80x"},
     .result = CONFIG_FAILED,
     .err = {"http.port", "80x"}},
    {.name = "empty integer",
     .argv = {"--http.port="},
     .result = CONFIG_FAILED,
     .err = {"http.port", "not an integer"}},
    {.name = "float integer",
     .argv = {"--sync.timeout_ms=1.5"},
     .result = CONFIG_FAILED,
     .err = {"sync.timeout_ms", "1.5"}},
    {.name = "integer overflow",
     .argv = {"--http.port=99999999999999999999"},
     .result = CONFIG_FAILED,
     .err = {"http.port", "99999999999999999999"}},
    {.name = "non-integer env",
     .env = {"CQRS_HTTP_PORT=abc"},
     .result = CONFIG_FAILED,
     .err = {"http.port", "CQRS_HTTP_PORT"}},
    {.name = "non-integer file",
     .file = "\n\n\nhttp.port = abc\n",
     .argv = {"--config=@FILE@"},
     .result = CONFIG_FAILED,
     .err = {"http.port", "@FILE@:4"}},
    {.name = "above max",
     .argv = {"--http.port=65536"},
     .result = CONFIG_FAILED,
     .err = {"http.port", "65536"}},
    {.name = "below min",
     .argv = {"--sync.timeout_ms=0"},
     .result = CONFIG_FAILED,
     .err = {"sync.timeout_ms", "out of range"}},
    {.name = "negative",
     .env = {"CQRS_HTTP_PORT=-1"},
     .result = CONFIG_FAILED,
     .err = {"http.port", "-1"}},
    {.name = "bad boolean flag",
     .argv = {"--log.verbose=maybe"},
     .result = CONFIG_FAILED,
     .err = {"log.verbose", "maybe"}},
    {.name = "bad boolean file",
     .file = "log.verbose = 2\n",
     .argv = {"--config=@FILE@"},
     .result = CONFIG_FAILED,
     .err = {"log.verbose", "@FILE@:1"}},
    {.name = "file line without '='",
     .file = "http.port = 1\n# fine\njustakey\n",
     .argv = {"--config=@FILE@"},
     .result = CONFIG_FAILED,
     .err = {"@FILE@:3", "key = value"}},
    {.name = "missing file",
     .argv = {"--config=/nonexistent/cqrs.conf"},
     .result = CONFIG_FAILED,
     .err = {"/nonexistent/cqrs.conf"}},
    {.name = "missing file by env",
     .env = {"CQRS_CONFIG=/nonexistent/env.conf"},
     .result = CONFIG_FAILED,
     .err = {"/nonexistent/env.conf"}},
    {.name = "positional argument",
     .argv = {"positional"},
     .result = CONFIG_FAILED,
     .err = {"'positional'"}},
    {.name = "flag without value",
     .argv = {"--verbose"},
     .result = CONFIG_FAILED,
     .err = {"--verbose"}},
    {.name = "a key that is not boolean needs a value",
     .argv = {"--http.port"},
     .result = CONFIG_FAILED,
     .err = {"--http.port", "--key=value"}},
    {.name = "flag without key", .argv = {"--=x"}, .result = CONFIG_FAILED, .err = {"--=x"}},
    {.name = "single dash", .argv = {"-p=1"}, .result = CONFIG_FAILED, .err = {"-p=1"}},
};

START_TEST(every_source_loads_or_names_the_bad_key)
{
    const lcase *tc = &lcases[_i];
    char *path = temp_path;
    if (tc->file)
        write_temp(path, sizeof(temp_path), tc->file);

    for (int i = 0; i < N(tc->env) && tc->env[i]; i++) {
        char *kv = subst(tc->env[i], path);
        char *eq = strchr(kv, '=');
        *eq = '\0';
        setenv(kv, eq + 1, 1);
        free(kv);
    }
    char *argv[N(tc->argv) + 2] = {"test_config"};
    int argc = 1;
    for (int i = 0; i < N(tc->argv) && tc->argv[i]; i++)
        argv[argc++] = subst(tc->argv[i], path);

    tconf c = {0};
    config_props props = {0};
    char err[512] = "";
    config_result r = config_load(table, &c, &props, argc, argv, err, sizeof(err));
    ck_assert_msg(r == tc->result, "%s: result %d, want %d (err '%s')", tc->name, r, tc->result,
                  err);

    if (r == CONFIG_LOADED) {
        for (const config_row *row = table; row->name; row++) {
            /* The default, unless the case overrides this key. */
            const char *want = row->def ? row->def : "";
            size_t klen = strlen(row->name);
            for (int i = 0; i < N(tc->want) && tc->want[i]; i++) {
                if (strncmp(tc->want[i], row->name, klen) == 0 && tc->want[i][klen] == '=')
                    want = tc->want[i] + klen + 1;
            }
            char got[256];
            field_text(row, &c, got, sizeof(got));
            ck_assert_msg(strcmp(got, want) == 0, "%s: %s = '%s', want '%s'", tc->name, row->name,
                          got, want);
        }
        char got[512] = "";
        for (size_t i = 0; i < props.n; i++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s=%s", i ? ";" : "",
                     props.keys[i], props.values[i]);
        ck_assert_msg(strcmp(got, tc->props) == 0, "%s: props '%s', want '%s'", tc->name, got,
                      tc->props);
        for (size_t i = 0; i < props.n; i++)
            ck_assert_str_eq(config_props_get(&props, props.keys[i]), props.values[i]);
    } else if (r == CONFIG_FAILED) {
        ck_assert_msg(tc->err[0] != NULL, "%s: table row lacks err", tc->name);
        for (int i = 0; i < N(tc->err) && tc->err[i]; i++) {
            char *want = subst(tc->err[i], path);
            ck_assert_msg(strstr(err, want) != NULL, "%s: err '%s' lacks '%s'", tc->name, err,
                          want);
            free(want);
        }
    }

    config_free(table, &c);
    ck_assert_ptr_null(c.host);
    ck_assert_ptr_null(c.prefix);
    config_props_free(&props);
    ck_assert_uint_eq(props.n, 0);
    for (int i = 1; i < argc; i++)
        free(argv[i]);
}
END_TEST

/* ---- config_usage ---- */

/* Every key appears with its flag, its environment variable and its default. */
static const struct {
    const char *flag, *env, *def;
} ucases[] = {
    {"--http.host", "CQRS_HTTP_HOST", "default: 127.0.0.1"},
    {"--http.port", "CQRS_HTTP_PORT", "default: 8080"},
    {"--sync.timeout_ms", "CQRS_SYNC_TIMEOUT_MS", "default: 5000"},
    {"--log.verbose", "CQRS_LOG_VERBOSE", "default: false"},
    {"--topic.prefix", "CQRS_TOPIC_PREFIX", "default: (empty)"},
    {"--dry_run", "CQRS_DRY_RUN", "default: false"},
};

START_TEST(usage_lists_every_key_with_its_variable_and_default)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_usage(f, "prog", "does things", table);
    fclose(f);
    ck_assert_msg(strncmp(buf, "usage: prog ", 12) == 0, "usage starts '%.40s'", buf);
    ck_assert_ptr_nonnull(strstr(buf, "does things"));
    /* The flag's line, then the next line holding the variable and the default. */
    const char *at = strstr(buf, ucases[_i].flag);
    ck_assert_msg(at != NULL, "no %s in usage", ucases[_i].flag);
    const char *nl = strchr(at, '\n');
    ck_assert_ptr_nonnull(nl);
    const char *end = strchr(nl + 1, '\n');
    ck_assert_ptr_nonnull(end);
    char line[256];
    snprintf(line, sizeof(line), "%.*s", (int)(end - nl - 1), nl + 1);
    ck_assert_msg(strstr(line, ucases[_i].env) && strstr(line, ucases[_i].def),
                  "line after %s is '%s'", ucases[_i].flag, line);
    free(buf);
}
END_TEST

/* ---- config_props ---- */

START_TEST(props_are_set_replaced_and_read_back)
{
    config_props p = {0};
    ck_assert_ptr_null(config_props_get(&p, "acks"));
    config_props_set(&p, "acks", "all");
    config_props_set(&p, "linger.ms", "5");
    config_props_set(&p, "acks", "1");
    ck_assert_uint_eq(p.n, 2);
    ck_assert_str_eq(p.keys[0], "acks");
    ck_assert_str_eq(p.keys[1], "linger.ms");
    ck_assert_str_eq(config_props_get(&p, "acks"), "1");
    ck_assert_str_eq(config_props_get(&p, "linger.ms"), "5");
    ck_assert_ptr_null(config_props_get(&p, "linger"));
    config_props_free(&p);
    ck_assert_uint_eq(p.n, 0);
    ck_assert_ptr_null(p.keys);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, case_setup, case_teardown);
    tcase_add_loop_test(tc, every_source_loads_or_names_the_bad_key, 0, N(lcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("usage");
    tcase_add_loop_test(tc, usage_lists_every_key_with_its_variable_and_default, 0, N(ucases));
    tcase_add_test(tc, props_are_set_replaced_and_read_back);
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
