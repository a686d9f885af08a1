/*
 * cmdcopy.h: a command message that an operator puts back into the commands topic (replay,
 * redrive): the command id it answers to, the time it was issued, and the headers the copy keeps.
 * Pure functions over headers, no I/O.
 */
#ifndef CQRS_CMDCOPY_H
#define CQRS_CMDCOPY_H

#include "domain/envelope.h"
#include "core/ids.h"
#include "kafka/kafka.h"

#include <stdbool.h>
#include <stddef.h>

/* Room for the headers of a copy: the original's plus the copy's mark. */
#define CMDCOPY_MAX_HEADERS (KAFKA_MAX_HEADERS + 1)

/* The header a replayed copy carries: "<partition>/<offset>" of the message it copies. */
#define CMDCOPY_REPLAY_MARK "cqrs_replay_of"
/* The header a redriven command carries: "<partition>/<offset>" of its dead letter. */
#define CMDCOPY_REDRIVE_MARK "cqrs_redrive_of"

/*
 * Copies the command id (ce_id) into id when the headers form a valid envelope whose id is a
 * UUID: then the processor can record the command, and deduplicate a copy of it. False when not
 * (the processor dead-letters such a message without any record).
 */
bool cmdcopy_id(const header *h, size_t n, char id[IDS_UUID_LEN]);

/*
 * When the command was issued, in ms since the epoch: its ce_time header (set by the gateway and
 * kept by every copy), else fallback_ms (the message's own timestamp).
 */
long long cmdcopy_time_ms(const header *h, size_t n, long long fallback_ms);

/*
 * Fills out with the headers of a copy: those of h except the dead-letter headers (dlq_*), the
 * reply partition (nobody waits for a copy's reply) and an earlier copy's mark, then mark_name
 * with the value mark_value. The entries borrow from h and from the mark arguments. Returns the
 * count (at most n + 1).
 */
size_t cmdcopy_headers(const header *h, size_t n, const char *mark_name, const char *mark_value,
                       header out[CMDCOPY_MAX_HEADERS]);

/* Parses "<partition>/<offset>" (a dlq_source or a mark) of len bytes; false when malformed. */
bool cmdcopy_parse_position(const char *s, size_t len, int *partition, long long *offset)
    __attribute__((warn_unused_result));

#endif
