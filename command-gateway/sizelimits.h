/*
 * sizelimits.h: the largest command the gateway takes. http.max_body and the producer's
 * message.max.bytes are settled from one another, with the envelope a command carries in Kafka
 * (headers, key, record framing) counted, so that a body the HTTP layer takes fits in a Kafka
 * message. Pure: unit-tested without Kafka.
 */
#ifndef CQRS_SIZELIMITS_H
#define CQRS_SIZELIMITS_H

#include "core/config.h"
#include "domain/domain.h"

#include <stddef.h>

/* ce_source of the commands the gateway publishes. */
#define SIZELIMITS_COMMAND_SOURCE "/command-gateway"

/*
 * The most a command's envelope adds to its payload in a Kafka message, as librdkafka counts it
 * against message.max.bytes: the ce_* headers with every attribute at its longest (the longest
 * command type of reg, 255-byte aggregate id and key, tracestate, ...), the key and the
 * record's framing.
 */
size_t sizelimits_envelope_max(const domain_registry *reg);

/* What sizelimits_settle() decided. */
typedef struct sizelimits {
    size_t max_body;    /* the HTTP layer's bound on a request body */
    size_t max_message; /* the producer's message.max.bytes */
    size_t envelope;    /* sizelimits_envelope_max() */
} sizelimits;

/*
 * Settles the limits from http.max_body (0: derived) and kafka's message.max.bytes (absent:
 * derived): neither set, message.max.bytes is librdkafka's default and the body bound that less
 * the envelope; only http.max_body set, message.max.bytes is it plus the envelope; both set,
 * they must agree. Writes message.max.bytes into producer (the producer's properties). Returns
 * 0, or -1 with err naming the keys.
 */
int sizelimits_settle(long long http_max_body, const config_props *kafka, size_t envelope_max,
                      config_props *producer, sizelimits *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
