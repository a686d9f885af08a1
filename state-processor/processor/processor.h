/* processor.h: the state-processor: consume commands, apply them in PostgreSQL, emit results. */
#ifndef CQRS_PROCESSOR_H
#define CQRS_PROCESSOR_H

#include "core/config.h"
#include "loop/procconfig.h"

#include <stdbool.h>

struct event_base;

/* The configuration table of the processor (ended by a NULL row). */
extern const config_row processor_config_table[];

typedef struct processor processor;

/*
 * Builds the processor on base: loads the schemas, connects to PostgreSQL (asynchronously),
 * creates the producer and joins the consumer group. Migrations must already be applied.
 * Returns NULL with err on a configuration problem.
 */
processor *processor_new(struct event_base *base, const processor_config *cfg,
                         const config_props *kafka_props, char *err, size_t errlen);
/* The processor's metrics, as /metrics renders them (borrowed: lives as long as p). */
struct metrics *processor_metrics(processor *p);
/*
 * The processor's loop: txloop_stop() stops it after the batch in hand, once committed;
 * txloop_failed() says whether it stopped on its own for an operator to decide (a stored offset
 * that counts another log, under offsets.on_mismatch=fail).
 */
struct txloop *processor_loop(processor *p);
/* Flushes what is still to be produced, leaves the group and frees everything. */
void processor_free(processor *p);

#endif
