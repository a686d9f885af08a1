/* log.c: JSON-lines logger; each line is built in one buffer and written with one write(2). */
#include "core/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_service = "cqrs";
static log_level log_min = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void log_init(const char *service, log_level min)
{
    log_service = service;
    log_min = min;
}

bool log_level_parse(const char *s, log_level *out)
{
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (log_level)i;
            return true;
        }
    }
    return false;
}

bool log_enabled(log_level level)
{
    return level >= log_min;
}

/* The line's fixed members: time, level, service and message. */
static json_t *line_new(log_level level, const char *msg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);

    /* jansson does the escaping; key order is insertion order. */
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_string(when));
    json_object_set_new(o, "level", json_string(level_names[level]));
    json_object_set_new(o, "service", json_string(log_service));
    json_object_set_new(o, "msg", json_string(msg ? msg : ""));
    return o;
}

/* Writes the line o (taken) with one write(2), which keeps lines whole. */
static void line_write(json_t *o)
{
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line)
        return;
    size_t len = strlen(line);
    line[len] = '\n'; /* overwrite the terminator */
    ssize_t w = write(STDERR_FILENO, line, len + 1);
    (void)w;
    free(line);
}

void log_kv(log_level level, const char *msg, const char *const *kv)
{
    if (!log_enabled(level))
        return;
    json_t *o = line_new(level, msg);
    for (; kv && kv[0]; kv += 2) {
        if (kv[1])
            json_object_set_new(o, kv[0], json_string(kv[1]));
    }
    line_write(o);
}

void log_fields(log_level level, const char *msg, const log_field *f, size_t n)
{
    if (!log_enabled(level))
        return;
    json_t *o = line_new(level, msg);
    for (size_t i = 0; i < n; i++) {
        if (f[i].is_num)
            json_object_set_new(o, f[i].key, json_integer(f[i].num));
        else if (f[i].str)
            json_object_set_new(o, f[i].key, json_string(f[i].str));
    }
    line_write(o);
}

void log_msg(log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log_kv(level, buf, NULL);
}
