/* log.h: structured logging, one JSON object per line on stderr. */
#ifndef CQRS_LOG_H
#define CQRS_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL } log_level;

/* Sets the service name written in every line and the minimum level. */
void log_init(const char *service, log_level min);
/* Parses "debug", "info", "warn", "error"; returns false for anything else. */
bool log_level_parse(const char *s, log_level *out);
/* True when a message at this level would be written (checked before formatting). */
bool log_enabled(log_level level);

/*
 * Writes one line: {"ts":..,"level":..,"service":..,"msg":..,<fields>}.
 * kv is a NULL-terminated list of key, value string pairs added as fields; values are escaped.
 */
void log_kv(log_level level, const char *msg, const char *const *kv);
/* One typed field of a line: a string (NULL: the field is left out) or a number. */
typedef struct {
    const char *key;
    bool is_num;
    const char *str;
    long long num;
} log_field;
#define LOG_STR(k, v) ((log_field){.key = (k), .is_num = false, .str = (v)})
#define LOG_NUM(k, v) ((log_field){.key = (k), .is_num = true, .num = (long long)(v)})
/* Writes one line with the n fields f (numbers as JSON numbers), as log_kv() does. */
void log_fields(log_level level, const char *msg, const log_field *f, size_t n);
/* LOG_KV(LOG_INFO, "listening", LOG_NUM("port", port), LOG_STR("host", h)) */
#define LOG_KV(level, msg, ...)                                                                    \
    log_fields((level), (msg), (const log_field[]){__VA_ARGS__},                                   \
               sizeof((const log_field[]){__VA_ARGS__}) / sizeof(log_field))

/* printf-style message with no extra fields. */
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) (log_enabled(LOG_DEBUG) ? log_msg(LOG_DEBUG, __VA_ARGS__) : (void)0)
#define log_info(...)  (log_enabled(LOG_INFO) ? log_msg(LOG_INFO, __VA_ARGS__) : (void)0)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
/* Field helper: LOG_FIELDS("command_id", id, "trace_id", t) */
#define LOG_FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})

#endif
