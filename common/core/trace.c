/* trace.c: traceparent checks and new span ids from the kernel's random source. */
#include "core/trace.h"

#include "core/ids.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
    }
    return true;
}

bool trace_parent_valid(const char *s)
{
    /* 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>; all-zero ids are invalid. */
    return s && strlen(s) == TRACE_PARENT_LEN - 1 && strncmp(s, "00-", 3) == 0 &&
           lower_hex(s + 3, 32) && s[35] == '-' && lower_hex(s + 36, 16) && s[52] == '-' &&
           lower_hex(s + 53, 2) && strspn(s + 3, "0") < 32 && strspn(s + 36, "0") < 16;
}

bool trace_state_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s), members = 1;
    if (n > TRACE_STATE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
        members += s[i] == ',';
    }
    return members <= 32;
}

static void random_hex(char *out, size_t bytes)
{
    unsigned char buf[16];
    do {
        ids_random(buf, bytes);
    } while (bytes && memcmp(buf, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", bytes) == 0);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < bytes; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * bytes] = '\0';
}

void trace_child(const char *parent, char out[TRACE_PARENT_LEN])
{
    char span[17];
    random_hex(span, 8);
    if (trace_parent_valid(parent)) {
        snprintf(out, TRACE_PARENT_LEN, "00-%.32s-%s-%.2s", parent + 3, span, parent + 53);
    } else {
        char id[33];
        random_hex(id, 16);
        snprintf(out, TRACE_PARENT_LEN, "00-%s-%s-00", id, span);
    }
}

void trace_id_of(const char *traceparent, char out[TRACE_ID_LEN])
{
    if (trace_parent_valid(traceparent))
        snprintf(out, TRACE_ID_LEN, "%.32s", traceparent + 3);
    else
        out[0] = 0;
}
