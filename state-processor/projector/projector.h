/*
 * projector.h: `state-processor project`: consumes the events topic as a consumer group and keeps
 * one projection table per aggregate type, a batch of events per PostgreSQL transaction.
 */
#ifndef CQRS_PROJECTOR_H
#define CQRS_PROJECTOR_H

#include "core/config.h"
#include "loop/procconfig.h"
#include "projector/projsql.h"

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
/* The projector's loop, to stop it or ask whether it failed (see processor_loop()). */
struct txloop *projector_loop(projector *p);
/* Leaves the group and frees everything (blocking: shutdown only). NULL is a no-op. */
void projector_free(projector *p);

#endif
