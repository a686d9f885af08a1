/* cmdcopy.c: identity, time and headers of a command message copied back by an operator. */
#include "core/rfc3339.h"
#include "ops/cmdcopy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool cmdcopy_id(const header *h, size_t n, char id[IDS_UUID_LEN])
{
    envelope e = {0};
    char err[256];
    bool ok = envelope_from_headers(&e, h, n, err, sizeof(err)) == 0 && ids_is_uuid(e.id);
    if (ok)
        memcpy(id, e.id, IDS_UUID_LEN);
    envelope_clear(&e);
    return ok;
}

static bool named(const header *h, const char *name)
{
    return strcmp(h->name, name) == 0;
}

long long cmdcopy_time_ms(const header *h, size_t n, long long fallback_ms)
{
    for (size_t i = 0; i < n; i++) {
        if (!named(&h[i], "ce_time") || !h[i].value || h[i].len >= RFC3339_LEN + 16)
            continue;
        char text[RFC3339_LEN + 16];
        memcpy(text, h[i].value, h[i].len);
        text[h[i].len] = '\0';
        long long ms;
        if (rfc3339_parse(text, &ms))
            return ms;
    }
    return fallback_ms;
}

size_t cmdcopy_headers(const header *h, size_t n, const char *mark_name, const char *mark_value,
                       header out[CMDCOPY_MAX_HEADERS])
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < CMDCOPY_MAX_HEADERS - 1; i++) {
        if (strncmp(h[i].name, DLQ_HEADER_PREFIX, strlen(DLQ_HEADER_PREFIX)) == 0 ||
            named(&h[i], "ce_replypartition") || named(&h[i], CMDCOPY_REPLAY_MARK) ||
            named(&h[i], CMDCOPY_REDRIVE_MARK))
            continue;
        out[k++] = h[i];
    }
    out[k++] = (header){mark_name, mark_value, strlen(mark_value)};
    return k;
}

bool cmdcopy_parse_position(const char *s, size_t len, int *partition, long long *offset)
{
    char buf[48];
    if (!s || len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    if (!slash || slash == buf || !slash[1] || strspn(buf, "0123456789/") != len ||
        strchr(slash + 1, '/'))
        return false;
    errno = 0;
    long p = strtol(buf, NULL, 10);
    long long o = strtoll(slash + 1, NULL, 10);
    if (errno || p > 1 << 20)
        return false;
    *partition = (int)p;
    *offset = o;
    return true;
}
