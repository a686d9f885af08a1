/* config.c: parsing and precedence for the configuration tables of both binaries. */
#include "core/config.h"

#include "core/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KAFKA_PREFIX "kafka."

extern char **environ;

/* Keys are spelled with '_' between words; '-' is taken in its place ("--dry-run" is
   "--dry_run"), as it already is in the environment's names. */
static bool same_key(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        if (*a != *b && !((*a == '-' || *a == '_') && (*b == '-' || *b == '_')))
            return false;
    }
    return *a == *b;
}

static const config_row *find_row(const config_row *table, const char *name)
{
    for (const config_row *r = table; r->name; r++) {
        if (same_key(r->name, name))
            return r;
    }
    return NULL;
}

static bool parse_int(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Stores one value; source names where it came from for the error message. */
static int set_value(const config_row *table, void *out, config_props *props, const char *key,
                     const char *value, const char *source, char *err, size_t errlen)
{
    if (strncmp(key, KAFKA_PREFIX, strlen(KAFKA_PREFIX)) == 0 && key[strlen(KAFKA_PREFIX)]) {
        config_props_set(props, key + strlen(KAFKA_PREFIX), value);
        return 0;
    }
    const config_row *r = find_row(table, key);
    if (!r) {
        snprintf(err, errlen, "unknown configuration key '%s' (%s)", key, source);
        return -1;
    }
    char *field = (char *)out + r->offset;
    switch (r->type) {
    case CONFIG_STR: {
        char **p = (char **)(void *)field;
        free(*p);
        *p = xstrdup(value);
        return 0;
    }
    case CONFIG_INT: {
        long long v;
        if (!parse_int(value, &v)) {
            snprintf(err, errlen, "%s: '%s' is not an integer (%s)", r->name, value, source);
            return -1;
        }
        if (v < r->min || v > r->max) {
            snprintf(err, errlen, "%s: %lld is out of range [%lld, %lld] (%s)", r->name, v, r->min,
                     r->max, source);
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case CONFIG_BOOL: {
        bool b;
        if (!parse_bool(value, &b)) {
            snprintf(err, errlen, "%s: '%s' is not a boolean (%s)", r->name, value, source);
            return -1;
        }
        memcpy(field, &b, sizeof(b));
        return 0;
    }
    }
    return -1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_file(const config_row *table, void *out, config_props *props, const char *path,
                     char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config: cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    char source[512];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        snprintf(source, sizeof(source), "%s:%d", path, lineno);
        if (!eq) {
            snprintf(err, errlen, "%s: expected 'key = value'", source);
            rc = -1;
            break;
        }
        *eq = '\0';
        rc = set_value(table, out, props, trim(s), trim(eq + 1), source, err, errlen);
    }
    fclose(f);
    return rc;
}

/* "http.max_body" -> "CQRS_HTTP_MAX_BODY", "dry_run" -> "CQRS_DRY_RUN" */
static void env_name(const char *key, char *out, size_t len)
{
    size_t j = snprintf(out, len, "CQRS_");
    for (const char *p = key; *p && j + 1 < len; p++)
        out[j++] = (char)(*p == '.' || *p == '-' ? '_' : toupper((unsigned char)*p));
    out[j] = '\0';
}

/*
 * Maps an environment variable to its key by comparing it with the table's names in
 * environment form, since '_' may stand for '.' or for itself. CQRS_KAFKA_X_Y becomes "kafka.x.y"
 * (librdkafka's names use dots). Returns NULL when the variable is not ours.
 */
static char *env_to_key(const config_row *table, const char *var, size_t len)
{
    static const char prefix[] = "CQRS_";
    static const char kafka[] = "CQRS_KAFKA_";
    if (len <= sizeof(prefix) - 1 || strncmp(var, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    char env[256];
    for (const config_row *r = table; r->name; r++) {
        env_name(r->name, env, sizeof(env));
        if (strlen(env) == len && strncmp(env, var, len) == 0)
            return xstrdup(r->name);
    }
    size_t skip =
        strncmp(var, kafka, sizeof(kafka) - 1) == 0 ? sizeof(kafka) - 1 : sizeof(prefix) - 1;
    char *key = xstrndup(var + skip, len - skip);
    for (char *p = key; *p; p++)
        *p = (char)(*p == '_' ? '.' : tolower((unsigned char)*p));
    if (skip == sizeof(kafka) - 1) {
        char *k = xasprintf("kafka.%s", key);
        free(key);
        key = k;
    }
    return key;
}

/* Environment variables that belong to tooling rather than to the binaries' tables. */
static bool env_ignored(const char *key)
{
    return strcmp(key, "config") == 0 || strncmp(key, "test.", 5) == 0 ||
           strcmp(key, "schemas.dir") == 0 || strcmp(key, "migrations.dir") == 0 ||
           strcmp(key, "build") == 0 || strcmp(key, "repo") == 0 || strncmp(key, "keep.", 5) == 0;
}

config_result config_load(const config_row *table, void *out, config_props *props, int argc,
                          char **argv, char *err, size_t errlen)
{
    for (const config_row *r = table; r->name; r++) {
        if (set_value(table, out, props, r->name, r->def ? r->def : "", "default", err, errlen))
            return CONFIG_FAILED;
    }
    const char *file = getenv("CQRS_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CONFIG_HELP;
        if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    if (file && *file && load_file(table, out, props, file, err, errlen))
        return CONFIG_FAILED;

    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char *key = env_to_key(table, *e, (size_t)(eq - *e));
        if (!key)
            continue;
        char source[256];
        snprintf(source, sizeof(source), "environment %.*s", (int)(eq - *e), *e);
        /* Keys known only to other tools are skipped; anything else must be ours. */
        int rc = env_ignored(key) && !find_row(table, key)
                     ? 0
                     : set_value(table, out, props, key, eq + 1, source, err, errlen);
        free(key);
        if (rc)
            return CONFIG_FAILED;
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        const char *eq = strchr(a, '=');
        const config_row *flag = strncmp(a, "--", 2) == 0 && !eq ? find_row(table, a + 2) : NULL;
        if (flag && flag->type == CONFIG_BOOL) { /* "--dry_run" alone means "--dry_run=true" */
            if (set_value(table, out, props, flag->name, "true", "command line", err, errlen))
                return CONFIG_FAILED;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || !eq || eq == a + 2) {
            snprintf(err, errlen, "unexpected argument '%s' (expected --key=value; see --help)", a);
            return CONFIG_FAILED;
        }
        char *key = xstrndup(a + 2, (size_t)(eq - a - 2));
        int rc = set_value(table, out, props, key, eq + 1, "command line", err, errlen);
        free(key);
        if (rc)
            return CONFIG_FAILED;
    }
    return CONFIG_LOADED;
}

void config_usage(FILE *f, const char *prog, const char *summary, const config_row *table)
{
    fprintf(f, "usage: %s [--config=FILE] [--key=value ...]\n%s\n\n", prog, summary);
    fprintf(f, "Every key may also be set in FILE as 'key = value' or in the environment as\n"
               "CQRS_<KEY> (upper case, dots as underscores). A '-' in a key is taken for '_'.\n"
               "A boolean flag alone (--key) means true. Precedence: flag > environment > file > "
               "default. Keys under\n"
               "'kafka.' are passed to librdkafka unchanged.\n\n");
    for (const config_row *r = table; r->name; r++) {
        char env[128];
        env_name(r->name, env, sizeof(env));
        fprintf(f, "  --%-28s %s\n      %-28s default: %s\n", r->name, r->help, env,
                r->def && *r->def ? r->def : "(empty)");
    }
}

void config_free(const config_row *table, void *out)
{
    for (const config_row *r = table; r->name; r++) {
        if (r->type == CONFIG_STR) {
            char **p = (char **)(void *)((char *)out + r->offset);
            free(*p);
            *p = NULL;
        }
    }
}

void config_props_set(config_props *props, const char *key, const char *value)
{
    for (size_t i = 0; i < props->n; i++) {
        if (strcmp(props->keys[i], key) == 0) {
            free(props->values[i]);
            props->values[i] = xstrdup(value);
            return;
        }
    }
    props->keys = xrealloc(props->keys, (props->n + 1) * sizeof(char *));
    props->values = xrealloc(props->values, (props->n + 1) * sizeof(char *));
    props->keys[props->n] = xstrdup(key);
    props->values[props->n] = xstrdup(value);
    props->n++;
}

const char *config_props_get(const config_props *props, const char *key)
{
    for (size_t i = 0; i < props->n; i++) {
        if (strcmp(props->keys[i], key) == 0)
            return props->values[i];
    }
    return NULL;
}

void config_props_free(config_props *props)
{
    for (size_t i = 0; i < props->n; i++) {
        free(props->keys[i]);
        free(props->values[i]);
    }
    free(props->keys);
    free(props->values);
    memset(props, 0, sizeof(*props));
}
