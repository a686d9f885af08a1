/* config.h: table-driven configuration: defaults < file < environment < command-line flags. */
#ifndef CQRS_CONFIG_H
#define CQRS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum { CONFIG_STR, CONFIG_INT, CONFIG_BOOL } config_type;

/* One configuration key; a binary describes all of its keys in one array ended by {NULL}. */
typedef struct config_row {
    const char *name; /* "http.port"; environment: CQRS_HTTP_PORT; flag: --http.port=8080 */
    config_type type; /* CONFIG_STR -> char *, CONFIG_INT -> long long, CONFIG_BOOL -> bool */
    size_t offset;    /* offsetof() the field in the binary's config struct */
    const char *def;  /* default as text, parsed like any other value; NULL for an empty string */
    long long min;    /* inclusive bounds for CONFIG_INT */
    long long max;
    const char *help; /* one line for --help */
} config_row;

/* Pass-through properties ("kafka.*" keys minus the prefix), in the order they were given. */
typedef struct config_props {
    size_t n;
    char **keys;
    char **values;
} config_props;

typedef enum { CONFIG_LOADED = 0, CONFIG_HELP, CONFIG_FAILED } config_result;

/*
 * Fills the struct at out from the table: defaults, then the file named by --config=FILE (or
 * CQRS_CONFIG), then CQRS_* environment variables, then --key=value flags (a boolean key may be
 * given alone, --key, for true). Keys under "kafka."
 * go to props (librdkafka validates them). Unknown keys, malformed or out-of-range values are
 * errors naming the key and where it came from. Returns CONFIG_HELP when --help was given.
 * Strings in out and props are owned by them: free with config_free() and config_props_free().
 */
config_result config_load(const config_row *table, void *out, config_props *props, int argc,
                          char **argv, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes every key with its environment name, default and help line. */
void config_usage(FILE *f, const char *prog, const char *summary, const config_row *table);

/* Frees the strings config_load() stored in out. */
void config_free(const config_row *table, void *out);

/* Frees the pass-through properties. */
void config_props_free(config_props *props);

/* Appends or replaces one pass-through property (copies both strings). */
void config_props_set(config_props *props, const char *key, const char *value);

/* Looks up a pass-through property; NULL when absent. Borrowed from props. */
const char *config_props_get(const config_props *props, const char *key);

#endif
