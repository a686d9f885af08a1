/*
 * projector.h: `state-processor project`: consumes the events topic as a consumer group and keeps
 * one projection table per aggregate type, a batch of events per PostgreSQL transaction.
 */
#ifndef CQRS_PROJECTOR_H
#define CQRS_PROJECTOR_H

#include "config.h"
#include "processor.h"
#include "projsql.h"

struct event_base;

/* The configuration table of the projector (ended by a NULL row): a subset of the processor's
   keys plus projector.group, filling a processor_config. */
extern const config_row projector_config_table[];

typedef struct projector projector;

/*
 * Builds the projector on base: loads the domain files, connects to PostgreSQL (asynchronously),
 * creates the events topic when missing (blocking, at most 10 s) and joins the group. The
 * migrations and the projection tables must already exist (dbsetup_apply()). cfg and base are
 * borrowed and must outlive the projector; kafka_props is read here only. Returns NULL with err
 * on a configuration problem.
 */
projector *projector_new(struct event_base *base, const processor_config *cfg,
                         const config_props *kafka_props, char *err, size_t errlen);
/* Asks the projector to stop after the batch in hand; the loop exits once it is committed. */
void projector_stop(projector *p);
/* True when the projector stopped on its own for an operator (see processor_failed()). */
bool projector_failed(const projector *p);
/* Leaves the group and frees everything (blocking: shutdown only). NULL is a no-op. */
void projector_free(projector *p);

#endif
