/* sizelimits.c: http.max_body and message.max.bytes, settled from one another (see sizelimits.h).
 */
#include "sizelimits.h"

#include "auth.h"
#include "core/rfc3339.h"
#include "domain/envelope.h"
#include "core/ids.h"
#include "intake.h"
#include "kafka/kafka.h"
#include "core/trace.h"
#include "core/xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t sizelimits_envelope_max(const domain_registry *reg)
{
    size_t type_len = 0;
    for (size_t i = 0; i < domain_registry_command_count(reg); i++) {
        size_t n = strlen(domain_command_type(domain_registry_command_at(reg, i)));
        type_len = n > type_len ? n : type_len;
    }
    /* One buffer of the longest attribute, each attribute a prefix of it. */
    size_t longest = TRACE_STATE_MAX > INTAKE_MAX_KEY_LEN ? TRACE_STATE_MAX : INTAKE_MAX_KEY_LEN;
    longest = type_len > longest ? type_len : longest;
    char *fill = xmalloc(longest + 1);
    memset(fill, 'x', longest);
    fill[longest] = '\0';
#define PREFIX(n) (fill + longest - (n))
    envelope e = {
        .id = PREFIX(IDS_UUID_LEN - 1),
        .source = SIZELIMITS_COMMAND_SOURCE,
        .type = PREFIX(type_len),
        .subject = PREFIX(INTAKE_MAX_AGGREGATE_LEN),
        .time = PREFIX(RFC3339_LEN - 1),
        .tenant = PREFIX(AUTH_TENANT_MAX),
        .idempotency_key = PREFIX(INTAKE_MAX_KEY_LEN),
        .traceparent = PREFIX(TRACE_PARENT_LEN - 1),
        .tracestate = PREFIX(TRACE_STATE_MAX),
        .request_hash = PREFIX(IDS_UUID_LEN - 1),
        .expected_version = ENVELOPE_MAX_VERSION,
        .reply_partition = 2147483647,
    };
#undef PREFIX
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    /* The message key is the aggregate id. */
    size_t n = kafka_message_size(INTAKE_MAX_AGGREGATE_LEN, 0, h, nh);
    free(fill);
    return n;
}

int sizelimits_settle(long long http_max_body, const config_props *kafka, size_t envelope_max,
                      config_props *producer, sizelimits *out, char *err, size_t errlen)
{
    out->envelope = envelope_max;
    const char *set = kafka ? config_props_get(kafka, "message.max.bytes") : NULL;
    long long max_message = KAFKA_DEFAULT_MAX_MESSAGE;
    if (set) {
        char *end;
        errno = 0;
        max_message = strtoll(set, &end, 10);
        if (errno || end == set || *end || max_message <= 0) {
            snprintf(err, errlen, "kafka.message.max.bytes: '%s' is not a number", set);
            return -1;
        }
    } else if (http_max_body > 0) {
        max_message = http_max_body + (long long)envelope_max;
    }
    if (max_message <= (long long)envelope_max) {
        snprintf(err, errlen,
                 "kafka.message.max.bytes: %lld leaves no room for a command beside its envelope "
                 "(up to %zu bytes)",
                 max_message, envelope_max);
        return -1;
    }
    long long max_body = http_max_body > 0 ? http_max_body : max_message - (long long)envelope_max;
    if (max_body + (long long)envelope_max > max_message) {
        snprintf(err, errlen,
                 "http.max_body: %lld bytes and a command's envelope (up to %zu bytes) do not fit "
                 "in kafka.message.max.bytes (%lld); lower http.max_body to %lld or leave it 0",
                 max_body, envelope_max, max_message, max_message - (long long)envelope_max);
        return -1;
    }
    char v[24];
    snprintf(v, sizeof(v), "%lld", max_message);
    config_props_set(producer, "message.max.bytes", v);
    out->max_body = (size_t)max_body;
    out->max_message = (size_t)max_message;
    return 0;
}
