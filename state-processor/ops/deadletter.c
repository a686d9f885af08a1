/* deadletter.c: parsing dead letters and matching them against the operator's selection. */
#include "ops/deadletter.h"

#include "core/rfc3339.h"
#include "ops/cmdcopy.h"
#include "core/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const header *find(const kafka_message *m, const char *name)
{
    for (size_t i = 0; i < m->nheaders; i++) {
        if (strcmp(m->headers[i].name, name) == 0 && m->headers[i].value)
            return &m->headers[i];
    }
    return NULL;
}

bool deadletter_parse(const kafka_message *m, deadletter *d)
{
    memset(d, 0, sizeof(*d));
    const header *reason = find(m, DLQ_HEADER_REASON);
    const header *source = find(m, DLQ_HEADER_SOURCE);
    if (!reason || !source ||
        !cmdcopy_parse_position(source->value, source->len, &d->source_partition,
                                &d->source_offset))
        return false;
    size_t len = reason->len < sizeof(d->reason) - 1 ? reason->len : sizeof(d->reason) - 1;
    memcpy(d->reason, reason->value, len);
    d->reason[len] = '\0';
    d->has_id = cmdcopy_id(m->headers, m->nheaders, d->id);
    d->time_ms = m->timestamp_ms;
    return true;
}

static int fail(deadletter_filter *f, char *err, size_t errlen, const char *key, const char *value,
                const char *why)
{
    snprintf(err, errlen, "%s: '%s' %s", key, value, why);
    deadletter_filter_clear(f);
    return -1;
}

static int parse_time(deadletter_filter *f, const char *key, const char *text, long long *out,
                      char *err, size_t errlen)
{
    *out = -1;
    if (*text && !rfc3339_parse(text, out))
        return fail(f, err, errlen, key, text,
                    "is not an RFC 3339 date-time (e.g. 2026-01-31T12:00:00Z)");
    return 0;
}

int deadletter_filter_init(deadletter_filter *f, const char *reason, const char *since,
                           const char *until, const char *ids, char *err, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    if (*reason) {
        if (!dlq_reason_known(reason)) {
            char why[256];
            snprintf(why, sizeof(why), "is not a dead-letter reason (%s)", dlq_reasons_text);
            return fail(f, err, errlen, "reason", reason, why);
        }
        f->reason = xstrdup(reason);
    }
    if (parse_time(f, "since", since, &f->since_ms, err, errlen) != 0 ||
        parse_time(f, "until", until, &f->until_ms, err, errlen) != 0)
        return -1;
    char *list = xstrdup(ids);
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!ids_is_uuid(tok)) {
            int rc = fail(f, err, errlen, "id", tok, "is not a command id (a UUID)");
            free(list);
            return rc;
        }
        f->ids = xrealloc(f->ids, (f->nids + 1) * sizeof(char *));
        f->ids[f->nids++] = xstrdup(tok);
    }
    free(list);
    return 0;
}

bool deadletter_selected(const deadletter_filter *f, const deadletter *d)
{
    if (f->reason && strcmp(f->reason, d->reason) != 0)
        return false;
    if (f->since_ms >= 0 && d->time_ms < f->since_ms)
        return false;
    if (f->until_ms >= 0 && d->time_ms >= f->until_ms)
        return false;
    if (f->nids == 0)
        return true;
    for (size_t i = 0; d->has_id && i < f->nids; i++) {
        if (strcasecmp(f->ids[i], d->id) == 0)
            return true;
    }
    return false;
}

void deadletter_filter_clear(deadletter_filter *f)
{
    free(f->reason);
    for (size_t i = 0; i < f->nids; i++)
        free(f->ids[i]);
    free(f->ids);
    memset(f, 0, sizeof(*f));
    f->since_ms = f->until_ms = -1;
}
