/*
 * httpd.h: the HTTP server (libevent evhttp) behind one opaque request type. Handlers may answer
 * at once or keep the request and answer later from any callback on the same loop.
 */
#ifndef CQRS_HTTPD_H
#define CQRS_HTTPD_H

#include "core/jsontext.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;

typedef struct httpd httpd;
typedef struct http_req http_req;

typedef enum {
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_PATCH,
    HTTP_DELETE,
    HTTP_OTHER
} http_method;

/*
 * Called once per request. The request is owned by the server until one http_req_reply*()
 * call, which must come exactly once, now or later.
 */
typedef void (*httpd_handler)(http_req *req, void *arg);
/* Called when a client goes away before its request was answered; req is valid during the call
   and freed after it: the owner must let go of it and never answer it. */
typedef void (*http_req_gone_cb)(http_req *req, void *arg);

typedef struct httpd_options {
    size_t max_body;         /* bigger bodies get 413 */
    size_t max_headers_size; /* a bigger request line and header block gets 431 */
    int timeout_s;           /* idle and write timeout: no byte moves for this long */
    int header_timeout_s;    /* a request head must arrive within this from its first byte,
                                else 408 (0: 10) */
    int body_timeout_s;      /* a body must arrive within this from the end of its head, else
                                408 (0: 30) */
    bool reuse_port;         /* SO_REUSEPORT: several loops listen on one port, the kernel
                                spreads the connections */
    size_t max_connections;  /* open connections at once; at the cap the server stops
                                accepting (the kernel's backlog holds the next ones) until
                                one closes. 0: no cap */
} httpd_options;

/* Called for every answer with its status and the time since the request arrived, the edge's
   own answers (408, 413, 431, ... written under evhttp, see httpconn.h) included. */
typedef void (*httpd_observer)(int status, long long elapsed_us, void *arg);

typedef enum {
    HTTPD_CONN_OPENED,  /* a connection was accepted */
    HTTPD_CONN_CLOSED,  /* one went away, for whatever reason */
    HTTPD_ACCEPT_PAUSED /* the cap was reached: accepting stops until a connection closes */
} httpd_conn_event;
/* Called on each change in the set of connections (metrics). */
typedef void (*httpd_conn_observer)(httpd_conn_event ev, void *arg);

/* Binds host:port and serves on base. NULL with err on failure (e.g. port in use). */
httpd *httpd_new(struct event_base *base, const char *host, int port, const httpd_options *lim,
                 httpd_handler handler, void *arg, char *err, size_t errlen);
/* Sets the observer of every answer (metrics). */
void httpd_set_observer(httpd *h, httpd_observer cb, void *arg);
/* Sets the observer of connections coming and going. */
void httpd_set_conn_observer(httpd *h, httpd_conn_observer cb, void *arg);
/* Connections open now: accepted and not yet closed. */
size_t httpd_connections(const httpd *h);
/* Stops accepting new connections; answers in progress still complete. */
void httpd_stop_listening(httpd *h);
/* Stops listening and frees the server; pending requests are dropped with their connections. */
void httpd_free(httpd *h);
/* The bound port (useful with port 0). */
int httpd_port(const httpd *h);

http_method http_req_method(const http_req *r);
/*
 * The path without the query string, as sent: still percent-encoded, so that a router splits it
 * at its slashes before decoding each segment (an id holding "/" is one segment, "a%2Fb").
 * Borrowed from the request.
 */
const char *http_req_path(const http_req *r);
/* s percent-encoded for a URI path segment (all but RFC 3986's unreserved); free() it. */
char *http_uri_escape(const char *s);
/* s[0..len) percent-decoded; NULL when it decodes to a NUL (%00). free() it. */
char *http_uri_unescape(const char *s, size_t len);
/* A query parameter, decoded; NULL when absent. Borrowed from the request. */
const char *http_req_query(http_req *r, const char *name);
/*
 * Calls fn for every query parameter in order (decoded; borrowed during the call) until it
 * returns false. Returns false when fn did, or when the query string does not parse.
 */
bool http_req_query_each(http_req *r, bool (*fn)(const char *name, const char *value, void *arg),
                         void *arg);
/* A request header (case-insensitive); NULL when absent. Borrowed from the request. */
const char *http_req_header(const http_req *r, const char *name);
/* The body as one NUL-terminated buffer (copied once); *len gets its size. Borrowed. */
const char *http_req_body(http_req *r, size_t *len);
/* Adds a response header (copied). */
void http_req_set_header(http_req *r, const char *name, const char *value);
/* Registers the callback for a client that disconnects before the answer. */
void http_req_on_gone(http_req *r, http_req_gone_cb cb, void *arg);

/* Answers with a body (copied) and frees the request. A gone client's request is just freed. */
void http_req_reply(http_req *r, int status, const char *content_type, const char *body,
                    size_t len);
/* Answers with a JSON body; takes ownership of body. */
void http_req_reply_json(http_req *r, int status, json_t *body);
/* Answers with the JSON text written into body (which is left empty), a newline after it. */
void http_req_reply_jsontext(http_req *r, int status, jsontext *body);
/* Answers with application/problem+json; takes ownership of problem (which holds "status"). */
void http_req_reply_problem(http_req *r, json_t *problem);

#endif
