/*
 * projbatch.h: the pure core of the projector. A batch of consumed events is decoded into the
 * rows of the projection tables (one per aggregate: the newest version in the batch wins), the
 * events that cannot be projected, and the offsets to store. No I/O: the projector sends the
 * JSON parameters made here to PostgreSQL.
 */
#ifndef CQRS_PROJBATCH_H
#define CQRS_PROJBATCH_H

#include "domain/domain.h"
#include "domain/envelope.h"
#include "kafka/kafka.h"
#include "domain/projection.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct projbatch_item {
    /* Where it came from, and a copy of the raw message for projection_skipped. */
    int partition;
    long long offset;
    char *key; /* NULL when the message had none */
    size_t key_len;
    char *value; /* NULL when the message had none */
    size_t len;
    header *headers; /* names and values owned by the item */
    size_t nheaders;

    /* Valid when skip_reason is NULL. */
    const projection *proj; /* borrowed from the registry */
    char *tenant;
    char *id;
    long long version;
    json_t *state; /* NULL once deleted */
    char *time;    /* ce_time when PostgreSQL can read it, else NULL (the row takes now()) */

    char *skip_reason; /* non-NULL: cannot be projected; goes to projection_skipped */
    char *skip_detail;
} projbatch_item;

typedef struct projbatch {
    projbatch_item *items;
    size_t n;
    char *topic;
    /* The items the next transaction writes: [from, to). All of them, or one at a time after
       PostgreSQL refused the batch (the projector isolates the event at fault). */
    size_t from, to;
} projbatch;

/*
 * Decodes n messages (copied) into b, which must be zeroed, and sets the range to all of them.
 * Events that cannot be projected get a reason. default_tenant applies to events without
 * ce_tenant. reg is borrowed for as long as b lives.
 */
void projbatch_decode(projbatch *b, const domain_registry *reg, const kafka_message *msgs, size_t n,
                      const char *default_tenant);
/* Frees everything and zeroes b. */
void projbatch_clear(projbatch *b);

/* Marks item i as one that cannot be projected (reason and detail are copied). */
void projbatch_skip(projbatch *b, size_t i, const char *reason, const char *detail);

/* Number of items of the range that will be projected (not skipped), in table p or any (NULL). */
size_t projbatch_count(const projbatch *b, const projection *p);
/* Number of items of the range that are skipped. */
size_t projbatch_skipped(const projbatch *b);

/*
 * The rows of the range for table p, for jsonb_to_recordset: a JSON array of {tenant, id,
 * version, state, deleted, updated_at, <declared column>: text or null, ...}, one per (tenant, id)
 * with the highest version in the range. *count receives the number of rows. Caller frees.
 */
char *projbatch_rows(const projbatch *b, const projection *p, size_t *count);
/*
 * The skipped items of the range: {group_id, topic, partition, kafka_offset, reason, detail,
 * key_hex, headers, value_hex}; key and value hex-encoded (null when absent), headers a JSON array
 * of {name, value} (name_hex / value_hex for bytes that are not UTF-8 text). Caller frees.
 */
char *projbatch_skipped_rows(const projbatch *b, const char *group, size_t *count);
/* The next offset of each partition of the range: {group_id, topic, partition, next_offset}. */
char *projbatch_offset_rows(const projbatch *b, const char *group, size_t *count);
/*
 * Fills partitions[] and next[] (room for b->n each) with each partition of the range and the
 * offset after its last item; returns how many.
 */
size_t projbatch_positions(const projbatch *b, int *partitions, long long *next);

#endif
