/*
 * httpconn.h: the HTTP edge under evhttp. A filter bufferevent between each accepted socket and
 * evhttp reads every request's head before evhttp does: it answers what libevent would answer
 * wrongly (413, 431, 400, 501, 417, each as problem+json that closes the connection, after a
 * lingering close) and cuts off requests whose head or body misses its deadline (408). What
 * passes is handed to evhttp unchanged. See docs/adr/0023-http-edge-under-evhttp.md.
 */
#ifndef CQRS_HTTPCONN_H
#define CQRS_HTTPCONN_H

#include <stddef.h>

struct bufferevent;

typedef struct httpconn_limits {
    size_t max_body;      /* a Content-Length or chunked body above it: 413 */
    size_t max_head;      /* a request line and headers above it: 431 */
    int header_timeout_s; /* from a head's first byte to its end: 408 beyond */
    int body_timeout_s;   /* from a head's end to its body's end: 408 beyond */
} httpconn_limits;

/* Called for each answer the edge writes itself (metrics), with the time since the request's
   first byte. */
typedef void (*httpconn_answer_cb)(int status, long long elapsed_us, void *arg);

/*
 * A filter bufferevent over under (taken: freed with the filter) that enforces lim, which is
 * borrowed for the connection's life. cb is called for every answer the edge writes itself.
 * NULL on out-of-memory (under is then freed).
 */
struct bufferevent *httpconn_wrap(struct bufferevent *under, const httpconn_limits *lim,
                                  httpconn_answer_cb cb, void *arg);

#endif
