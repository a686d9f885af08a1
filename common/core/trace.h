/*
 * trace.h: W3C Trace Context (https://www.w3.org/TR/trace-context/). Each service that handles a
 * command takes part in its trace: it keeps the trace id it was given (or starts a trace when
 * none came) and names a span id of its own as the parent of what it sends on, and its log
 * lines about the command carry the trace id.
 */
#ifndef CQRS_TRACE_H
#define CQRS_TRACE_H

#include <stdbool.h>

/* "00-" 32 hex "-" 16 hex "-" 2 hex, plus the NUL. */
#define TRACE_PARENT_LEN 56
#define TRACE_ID_LEN     33
/* Longest tracestate carried on (the specification's limit for what a vendor must pass). */
#define TRACE_STATE_MAX 512

/* True if s is a valid traceparent of version 00 (lowercase hex, ids not all zero). */
bool trace_parent_valid(const char *s);
/*
 * True if s is a tracestate this service passes on: at most TRACE_STATE_MAX bytes of printable
 * ASCII and at most 32 list members (false for NULL). Its members are not interpreted here.
 */
bool trace_state_valid(const char *s);
/*
 * The traceparent of this service's span: parent's trace id and flags with a new random span id
 * when parent is valid, else a new trace (random trace id, flags 00: not sampled).
 */
void trace_child(const char *parent, char out[TRACE_PARENT_LEN]);
/* The trace id of a valid traceparent, for log lines; "" for NULL or an invalid one. */
void trace_id_of(const char *traceparent, char out[TRACE_ID_LEN]);

#endif
