/* header.h: a message header, as Kafka carries it and the wire contract (domain/envelope.h) names
   it. */
#ifndef CQRS_HEADER_H
#define CQRS_HEADER_H

#include <stddef.h>

/* A message header as name and value bytes; values are not NUL-terminated on the wire. */
typedef struct header {
    const char *name;
    const char *value;
    size_t len;
} header;

#endif
