/*
 * deadletter.h: a message of the dead-letter topic as the redrive sees it (its reason, where its
 * command was consumed, the command id), and the operator's selection. Pure, no I/O.
 */
#ifndef CQRS_DEADLETTER_H
#define CQRS_DEADLETTER_H

#include "core/ids.h"
#include "kafka/kafka.h"

#include <stdbool.h>
#include <stddef.h>

/* What one dead letter says about itself (copies, owned by the struct). */
typedef struct deadletter {
    char reason[64];      /* dlq_reason */
    int source_partition; /* dlq_source: where the processor consumed the command */
    long long source_offset;
    bool has_id;           /* the command's envelope is valid and its id a UUID */
    char id[IDS_UUID_LEN]; /* ce_id, when has_id */
    long long time_ms;     /* when it was dead-lettered: the message's timestamp (-1: none) */
} deadletter;

/*
 * Reads m's dlq_reason and dlq_source headers and its command id into d. False when m is not a
 * dead letter of the processor (either header missing, or dlq_source not "partition/offset").
 */
bool deadletter_parse(const kafka_message *m, deadletter *d) __attribute__((warn_unused_result));

/* The operator's selection: a dead letter is selected when every criterion given holds. */
typedef struct deadletter_filter {
    char *reason;       /* NULL: any reason */
    long long since_ms; /* dead-lettered at or after; -1: no bound */
    long long until_ms; /* dead-lettered before; -1: no bound */
    char **ids;         /* command ids, any of which (nids 0: any id) */
    size_t nids;
} deadletter_filter;

/*
 * Builds f from the texts of the keys "reason" (one the processor gives, see
 * dlq_reasons in domain/envelope.h), "since", "until" (RFC 3339) and "id" (command ids, separated
 * by commas);
 * "" leaves a criterion out. Returns 0, or -1 with err naming the key and the value at fault
 * (f is then cleared). Free with deadletter_filter_clear().
 */
int deadletter_filter_init(deadletter_filter *f, const char *reason, const char *since,
                           const char *until, const char *ids, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* True when d matches every criterion of f. */
bool deadletter_selected(const deadletter_filter *f, const deadletter *d);
/* Frees what deadletter_filter_init() allocated (safe on a zeroed filter). */
void deadletter_filter_clear(deadletter_filter *f);

#endif
