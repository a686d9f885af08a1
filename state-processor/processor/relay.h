/*
 * relay.h: the outbox relay. Publishes domain events from outbox rows to the events topic and
 * marks them published once Kafka confirms. At start, and after any lost PostgreSQL session, it
 * produces again the rows left unpublished before, so publication is at-least-once; consumers
 * dedupe by the event id.
 */
#ifndef CQRS_RELAY_H
#define CQRS_RELAY_H

#include "core/config.h"
#include "core/metrics.h"

#include <jansson.h>
#include <stdbool.h>

struct event_base;
typedef struct relay relay;

/*
 * Creates the relay with its own PostgreSQL connection and producer; its counters go to m
 * (borrowed, must outlive the relay). NULL with err on failure.
 */
relay *relay_new(struct event_base *base, const char *conninfo, const config_props *kafka_props,
                 const char *events_topic, metrics *m, char *err, size_t errlen);
/* A row member that carries the event's data already encoded, in place of "payload": the
   processor's rows, whose data it encoded once for the outbox write (a JSON string). */
#define RELAY_PAYLOAD_TEXT "payload_text"

/*
 * Publishes committed outbox rows: a JSON array of {tenant, aggregate_type, aggregate_id,
 * version, event_type, command_id, payload or RELAY_PAYLOAD_TEXT} (borrowed). A row that cannot
 * make an event (a member missing or of the wrong type) is logged at error level and counted in
 * relay_outbox_rows_malformed_total, never produced: it stays unpublished in the outbox for an
 * operator.
 */
void relay_publish(relay *r, json_t *rows);
/* Kafka's confirmations are marked in outbox with one UPDATE for many (ADR 0036). */
#define RELAY_MARK_ROWS     500 /* keys that make an UPDATE at once */
#define RELAY_MARK_DELAY_MS 50  /* the longest the first key waits for others */
/* Sets both bounds (the defaults above), the number of keys at least 1. */
void relay_set_marking(relay *r, size_t rows, unsigned delay_ms);
/* Events the relay holds: produced and not yet confirmed by Kafka, or refused and waiting to be
   produced again. */
size_t relay_unconfirmed(const relay *r);
/* Calls cb(arg) once, from a delivery report or the retry, when relay_unconfirmed() has fallen
   to limit or below (at once if it has). A later call replaces the waiter; cb NULL removes it. */
void relay_notify_below(relay *r, size_t limit, void (*cb)(void *arg), void *arg);
/* Another session that wrote outbox rows was lost (the processor's), so a COMMIT's outcome may
   have been hidden: the rows left unpublished up to now are scanned for and produced again. */
void relay_rescan(relay *r);
/* Flushes the producer, marks what it can and frees. Blocking: shutdown only. */
void relay_free(relay *r);

#endif
