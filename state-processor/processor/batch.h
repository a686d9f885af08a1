/*
 * batch.h: the pure core of the processor. A batch of consumed commands is decoded, matched
 * against what PostgreSQL already holds (stored offsets, idempotency records, aggregate rows),
 * applied in order through the domain rules, and turned into the rows to write. No I/O here: the
 * processor feeds query results in and takes JSON parameters out.
 */
#ifndef CQRS_BATCH_H
#define CQRS_BATCH_H

#include "domain/domain.h"
#include "domain/envelope.h"
#include "kafka/kafka.h"
#include "core/strmap.h"
#include "core/trace.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    ITEM_NEW,       /* decoded, not yet applied */
    ITEM_SKIPPED,   /* offset below the stored position: already processed, nothing to do */
    ITEM_APPLIED,   /* the command changed its aggregate: new version, one event */
    ITEM_REJECTED,  /* the domain (or the envelope) refused it: recorded, no version bump */
    ITEM_DUPLICATE, /* same tenant + idempotency key seen before: answer the stored result */
} item_state;

typedef struct batch_item {
    /* Where it came from, and a copy of the raw message for the dead-letter topic: key, value
       and headers all in the one allocation raw (the value and header values NUL-terminated). */
    int partition;
    long long offset;
    const char *key; /* NULL when it has none */
    size_t key_len;
    const char *value;
    size_t len;
    const header *headers;
    size_t nheaders;
    void *raw;

    envelope env; /* valid when dead_reason is NULL or the id is known */
    const domain_command *cmd;
    json_t *payload;
    char *dead_reason; /* non-NULL: poison message, goes to the dead-letter topic */
    char *dead_detail;
    bool dead_sent;  /* its dead letter is confirmed by Kafka (the processor sets it) */
    bool recordable; /* has enough identity (uuid id, type) to be recorded as rejected */

    item_state state;
    int http_status;
    json_t *body;      /* reply body: applied result or problem */
    long long version; /* version produced (applied) or current (rejected) */
    char *event_id;    /* applied: "<tenant>/<type>/<id>/<version>" */
    /* Applied: the new state, the reply body and the event's data as JSON text. The state is
       encoded once, here, and spliced into the rest: body and event are its one encoding. NULL
       when it could not be encoded (its rows then fail: batch_refused()). */
    char *state_text;
    char *body_text;
    char *event_text;
    const char *tenant;                 /* borrowed from env or the default */
    const char *idem_key;               /* borrowed from env or the command id */
    char trace_id[TRACE_ID_LEN];        /* of the command's trace, for log lines */
    char traceparent[TRACE_PARENT_LEN]; /* this processor's span in it: its events' parent */
} batch_item;

typedef struct batch {
    batch_item *items;
    size_t n;
    const char *group;      /* borrowed */
    const char *topic;      /* owned copy of the consumed topic name */
    strmap *aggregates;     /* "tenant\x1ftype\x1fid" -> struct agg_row (batch.c) */
    strmap *known;          /* by key and by command id -> struct known_cmd (batch.c) */
    int *partitions;        /* distinct partitions of the batch */
    long long *stored_next; /* next offset stored in PostgreSQL per partition, -1 if none */
    long long *batch_next;  /* next offset after the range per partition, -1 if none in it */
    size_t npartitions;
    /* The items the next transaction applies and writes: [from, to). All of them, or a part
       while the processor isolates a command PostgreSQL refuses (batch_refused()). */
    size_t from, to;
    int refusals; /* consecutive refusals of the range as it is */
} batch;

/* What the processor does after PostgreSQL refused the range's data (batch_refused()). */
typedef enum {
    BATCH_RETRIED,       /* a unique violation, the range's first: write it again as it is */
    BATCH_NARROWED,      /* the range was halved: write its first half */
    BATCH_RETRY_ALONE,   /* one command, refused once: write it again on its own */
    BATCH_DEAD_LETTERED, /* one command, refused twice: it is now dead (dead letter, recorded as
                            rejected) */
    BATCH_UNRECORDED,    /* its rejection was refused too: only the offset moves past it */
    BATCH_STUCK,         /* nothing of the range left to drop: retry after a backoff */
} batch_refusal;

/*
 * Decodes n messages (copied) into b, which must be zeroed, and sets the range to all of them.
 * Messages that cannot be processed are marked dead with a reason; the rest are validated against
 * the registry. default_tenant applies to messages without ce_tenant.
 */
void batch_decode(batch *b, const domain_registry *reg, const kafka_message *msgs, size_t n,
                  const char *group, const char *default_tenant);

/*
 * Decides what follows PostgreSQL's refusal of the range's data (an error of SQLSTATE class 22,
 * 23 or 54) or a row of it that could not be encoded; call it before batch_reset(). A range of
 * several commands refused for a unique violation (unique) is written again whole once: that is
 * most often a race lost, not bad data (see batch.c). Otherwise a range of several commands is
 * halved; a command refused on its own is tried once more (the refusal may have been a race with
 * another processor), then dead-lettered with reason and detail (copied) and recorded as
 * rejected; if that record is refused too, only the offset moves past it.
 */
batch_refusal batch_refused(batch *b, const char *reason, const char *detail, bool unique);
/* After the range committed: true, with the range set to the rest of the batch, when any is
   left. */
bool batch_next_range(batch *b);

/* Forgets what was loaded and applied, keeping the decoded items, for a retry. */
void batch_reset(batch *b);
/* Frees everything. */
void batch_clear(batch *b);

/* Query parameters for the three reads (caller frees each with free()):
   partitions as a PostgreSQL int[] literal, known keys and aggregates as JSON arrays (NULL when
   an item's attributes cannot be encoded as JSON: see batch_refused()). */
char *batch_partitions_param(const batch *b);
char *batch_keys_param(const batch *b);
char *batch_aggregates_param(const batch *b);

/* Feeds one stored offset row. */
void batch_load_offset(batch *b, int partition, long long next_offset);
/* Feeds one idempotency record: an existing command with this tenant and key. result is a JSON
   text or NULL. */
void batch_load_command(batch *b, const char *tenant, const char *key, const char *id,
                        const char *status, int http_status, const char *result);
/* Feeds one aggregate row; state is a JSON text or NULL. Returns -1 when state does not parse. */
int batch_load_aggregate(batch *b, const char *tenant, const char *type, const char *id,
                         long long version, const char *state, bool deleted);

/* Applies every item in order through the domain rules and the version checks. */
void batch_apply(batch *b);

/*
 * Write parameters of the range, JSON arrays for jsonb_to_recordset (caller frees with free()).
 * NULL when a row cannot be encoded (not UTF-8 text, say): never a row left out.
 */
char *batch_aggregate_rows(const batch *b, size_t *count);
char *batch_command_rows(const batch *b, size_t *count);
char *batch_outbox_rows(const batch *b, size_t *count);
/* The outbox rows as the relay takes them (caller owns the array): each event's data as the text
   the outbox row holds (relay.h: RELAY_PAYLOAD_TEXT); NULL when a row cannot be encoded. */
json_t *batch_outbox_json(const batch *b);
char *batch_offset_rows(const batch *b, size_t *count);

/* The reply the gateway waits for, as text: {command_id, status, http_status, body, replayed};
   caller frees it; NULL when it cannot be encoded. */
char *batch_reply(const batch_item *it);

#endif
