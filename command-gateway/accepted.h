/*
 * accepted.h: the records of accepted commands, written in batches: one INSERT in flight at a
 * time, what arrives meanwhile makes the next (ADR 0014).
 */
#ifndef CQRS_ACCEPTED_H
#define CQRS_ACCEPTED_H

#include "gateway.h"

struct pending;

/* Records a command Kafka has confirmed whose key the gateway made up. */
void accepted_record(struct pending *p);
/* 202: once the command's record is written, or at once while PostgreSQL is down. */
void accepted_answer(struct pending *p);
/* Writes the accepted records gathered so far (shutdown: before the connection goes). */
void accepted_flush(gateway *g);

#endif
