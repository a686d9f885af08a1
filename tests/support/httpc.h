/* httpc.h: a minimal blocking HTTP/1.1 client for the integration and end-to-end tests. */
#ifndef CQRS_TEST_HTTPC_H
#define CQRS_TEST_HTTPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct httpc_response {
    int status;    /* 0 when the request failed (connect, timeout, parse) */
    char *headers; /* raw header block, "Name: value\r\n" lines */
    char *body;
    size_t body_len;
    json_t *json; /* body parsed as JSON, or NULL */
} httpc_response;

/*
 * Sends one request to 127.0.0.1:port with Connection: close and reads the whole answer within
 * timeout_ms. extra_headers is a block of "Name: value\r\n" lines or NULL; body may be NULL.
 */
httpc_response httpc_request(int port, const char *method, const char *path,
                             const char *extra_headers, const char *body, int timeout_ms);
/* A response header's value (case-insensitive name), copied into buf; NULL when absent. */
const char *httpc_header(const httpc_response *r, const char *name, char *buf, size_t len);
/* The value of an unlabelled sample of /metrics on port, or -1 when absent. */
long long httpc_metric(int port, const char *name);
/* Polls that metric until it equals want, for up to timeout_ms; returns the last value read. */
long long httpc_metric_becomes(int port, const char *name, long long want, int timeout_ms);
/* As httpc_metric_becomes(), until the value is at least min. */
long long httpc_metric_reaches(int port, const char *name, long long min, int timeout_ms);
/* Frees what the response holds. */
void httpc_free(httpc_response *r);

/* ---- raw connections, for what a well-behaved client would not send ---- */
/* A blocking TCP connection to 127.0.0.1:port; -1 on failure. close() it. */
int httpc_connect(int port);
/*
 * Sends buf[0..len) within timeout_ms; returns the bytes sent before a failure (a reset, a closed
 * connection: EPIPE is not raised) or the deadline, len when all went.
 */
size_t httpc_send(int fd, const void *buf, size_t len, int timeout_ms);
/*
 * Reads one answer (its head, then Content-Length bytes of body, or up to the end of stream)
 * within timeout_ms. status 0 when none came, or the connection was reset before it.
 */
httpc_response httpc_read(int fd, int timeout_ms);
/* Reads and drops until the peer closes; true if it did within timeout_ms. */
bool httpc_closed_within(int fd, int timeout_ms);

#endif
