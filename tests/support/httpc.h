/* httpc.h: a minimal blocking HTTP/1.1 client for the integration and end-to-end tests. */
#ifndef CQRS_TEST_HTTPC_H
#define CQRS_TEST_HTTPC_H

#include <jansson.h>
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
/* Frees what the response holds. */
void httpc_free(httpc_response *r);

#endif
