/* httpd.c: evhttp glue: request wrapper, limits, disconnect detection, replies. */
#include "http/httpd.h"

#include "http/httpconn.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/xalloc.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

struct httpd {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct evconnlistener *listener; /* sock's; NULL once it stopped listening */
    httpd_handler handler;
    void *arg;
    httpd_observer observer;
    void *observer_arg;
    httpd_conn_observer conn_observer;
    void *conn_observer_arg;
    int port;
    size_t max_conns; /* 0: no cap */
    size_t conns;     /* accepted, not closed yet */
    bool paused;      /* at the cap: the listener is disabled */
    long long pause_logged_us;
    struct bufferevent **adopting; /* accepted in this loop pass, see on_accept() */
    size_t nadopting, adopting_cap;
    struct event *adopt;
    httpconn_limits edge; /* every connection's filter borrows it */
};

struct http_req {
    httpd *server;
    long long start_us;
    struct evhttp_request *ev; /* NULL once the client is gone */
    struct evhttp_connection *conn;
    char *path;
    struct evkeyvalq query;
    bool query_parsed;
    bool query_bad; /* the query string does not parse */
    char *body;
    size_t body_len;
    http_req_gone_cb gone;
    void *gone_arg;
    struct event *hangup; /* the client closing its side while we hold the request */
};

/* Reason phrases evhttp does not know (it says "Client Error" for 422, for example). */
static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return NULL; /* evhttp picks one */
    }
}

static void req_free(http_req *r)
{
    if (r->hangup)
        event_free(r->hangup);
    if (r->query_parsed)
        evhttp_clear_headers(&r->query);
    free(r->path);
    free(r->body);
    free(r);
}

/*
 * The connection closed while we still held its request: libevent frees the request itself.
 * With a gone callback the owner lets go of the request there, and it is freed here; without
 * one, the owner's later reply frees it.
 */
static void conn_closed(httpd *h);

static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    http_req *r = arg;
    httpd *h = r->server;
    (void)conn;
    r->ev = NULL;
    r->conn = NULL;
    if (r->gone) {
        r->gone(r, r->gone_arg);
        req_free(r);
    }
    conn_closed(h);
}

/* The close callback of a connection without a request in our hands. */
static void on_idle_close(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    conn_closed(arg);
}

static void notify(httpd *h, httpd_conn_event ev)
{
    if (h->conn_observer)
        h->conn_observer(ev, h->conn_observer_arg);
}

static void conn_closed(httpd *h)
{
    h->conns--;
    notify(h, HTTPD_CONN_CLOSED);
    if (h->paused && h->conns < h->max_conns) {
        h->paused = false;
        if (h->listener)
            evconnlistener_enable(h->listener);
    }
}

/* The edge's own answers (httpconn.h) go to the observer as evhttp's do. */
static void on_edge_answer(int status, long long elapsed_us, void *arg)
{
    httpd *h = arg;
    if (h->observer)
        h->observer(status, elapsed_us, h->observer_arg);
}

/*
 * Counting connections. libevent 2.1 has no cap on them and no callback that sees each one
 * come and go: evhttp asks for a connection's bufferevent here, just after accept() and before
 * the connection object exists, and the close callback can only be set on that object. So the
 * connection is counted in here, and on_adopt(), activated for the same loop pass, finds it
 * through the bufferevent's callback argument (evhttp always passes its connection there) and
 * sets the close callback that counts it out. The reference taken here keeps the bufferevent
 * alive should evhttp drop the connection in between; its callbacks are then cleared, which
 * is how on_adopt() tells.
 */
static struct bufferevent *on_accept(struct event_base *base, void *arg)
{
    httpd *h = arg;
    struct bufferevent *sock = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    /* evhttp parses what the edge filter lets through (httpconn.h); evhttp sets the socket on
       the filter, which hands it down. */
    struct bufferevent *bev = sock ? httpconn_wrap(sock, &h->edge, on_edge_answer, h) : NULL;
    if (!bev)
        xoom(sizeof(void *)); /* evhttp would make one we could not count */
    bufferevent_incref(bev);
    if (h->nadopting == h->adopting_cap) {
        h->adopting_cap = h->adopting_cap ? 2 * h->adopting_cap : 16;
        h->adopting = xrealloc(h->adopting, h->adopting_cap * sizeof(*h->adopting));
    }
    h->adopting[h->nadopting++] = bev;
    event_active(h->adopt, EV_TIMEOUT, 1);
    h->conns++;
    notify(h, HTTPD_CONN_OPENED);
    if (h->max_conns && h->conns >= h->max_conns && !h->paused) {
        /* The listener checks after each callback and accepts no more in this pass. */
        evconnlistener_disable(h->listener);
        h->paused = true;
        notify(h, HTTPD_ACCEPT_PAUSED);
        long long now = ids_monotonic_us();
        if (now - h->pause_logged_us >= 10 * 1000000LL) {
            LOG_KV(LOG_WARN, "connection cap reached: accepting paused until one closes",
                   LOG_NUM("max_connections", h->max_conns));
            h->pause_logged_us = now;
        }
    }
    return bev;
}

static void on_adopt(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    httpd *h = arg;
    for (size_t i = 0; i < h->nadopting; i++) {
        struct bufferevent *bev = h->adopting[i];
        void *evcon = NULL;
        bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
        if (evcon)
            evhttp_connection_set_closecb(evcon, on_idle_close, h);
        bufferevent_decref(bev); /* frees it if evhttp let go already */
        if (!evcon)
            conn_closed(h);
    }
    h->nadopting = 0;
}

/*
 * evhttp stops reading a connection while its request is being handled, so it would notice a
 * client that left only when the answer is written. EV_CLOSED (EPOLLRDHUP) reports the peer's
 * end of stream without reading; closing the connection then runs on_conn_close(). A client
 * that half-closes after its request is treated as gone, as nginx does.
 */
static void on_hangup(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    http_req *r = arg;
    if (r->conn)
        evhttp_connection_free(r->conn);
}

static void on_request(struct evhttp_request *ev, void *arg)
{
    httpd *h = arg;
    http_req *r = xcalloc(1, sizeof(*r));
    r->server = h;
    r->start_us = ids_monotonic_us();
    r->ev = ev;
    r->conn = evhttp_request_get_connection(ev);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *raw = uri ? evhttp_uri_get_path(uri) : NULL;
    r->path = xstrdup(raw && *raw ? raw : "/"); /* still encoded: see http_req_path() */
    /* evhttp allows one request in progress per connection, so one close callback suffices;
       it counts the connection out as on_idle_close() would. */
    if (r->conn) {
        evhttp_connection_set_closecb(r->conn, on_conn_close, r);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(r->conn);
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        if (fd >= 0) {
            r->hangup = event_new(h->base, fd, EV_CLOSED, on_hangup, r);
            event_add(r->hangup, NULL);
        }
    }
    h->handler(r, h->arg);
}

/* A listening socket on host:port (numeric host), handed to evhttp. NULL on failure. */
static struct evhttp_bound_socket *bind_listener(struct evhttp *http, struct event_base *base,
                                                 const char *host, int port, bool reuse_port)
{
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
                                    .ai_socktype = SOCK_STREAM,
                                    .ai_protocol = IPPROTO_TCP,
                                    .ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG};
    struct evutil_addrinfo *ai = NULL;
    if (evutil_getaddrinfo(host, service, &hints, &ai) != 0 || !ai)
        return NULL;
    unsigned flags = LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
    if (reuse_port)
        flags |= LEV_OPT_REUSEABLE_PORT;
    /* No callback yet: evhttp sets its own, which also enables the listener. The backlog is the
       kernel's limit (net.core.somaxconn caps SOMAXCONN), not libevent's 128: a burst of
       connections beyond the backlog is not refused but retried by the clients' kernels after
       1, 3, 7 ... seconds, which is a stall the clients cannot see the cause of. */
    struct evconnlistener *l = evconnlistener_new_bind(base, NULL, NULL, flags, SOMAXCONN,
                                                       ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (!l)
        return NULL;
    struct evhttp_bound_socket *sock = evhttp_bind_listener(http, l);
    if (!sock)
        evconnlistener_free(l);
    return sock;
}

httpd *httpd_new(struct event_base *base, const char *host, int port, const httpd_options *lim,
                 httpd_handler handler, void *arg, char *err, size_t errlen)
{
    httpd *h = xcalloc(1, sizeof(*h));
    h->base = base;
    h->http = evhttp_new(base);
    h->handler = handler;
    h->arg = arg;
    /* Every method libevent parses reaches the router, which answers 405 with Allow for those a
       route does not take (evhttp would answer 501 for the ones not allowed here). CONNECT and
       methods libevent does not know are answered 501 by the edge before evhttp sees them. */
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT);
    evhttp_set_max_body_size(h->http, (ev_ssize_t)lim->max_body);
    /* The edge filter refuses a head over the limit first, with 431; evhttp's own limit counts
       the header fields only, so it never refuses what the filter let through. */
    evhttp_set_max_headers_size(h->http, (ev_ssize_t)lim->max_headers_size);
    h->edge = (httpconn_limits){
        .max_body = lim->max_body,
        .max_head = lim->max_headers_size,
        .header_timeout_s = lim->header_timeout_s > 0 ? lim->header_timeout_s : 10,
        .body_timeout_s = lim->body_timeout_s > 0 ? lim->body_timeout_s : 30,
    };
    evhttp_set_timeout(h->http, lim->timeout_s);
    evhttp_set_default_content_type(h->http, "application/json");
    evhttp_set_gencb(h->http, on_request, h);
    evhttp_set_bevcb(h->http, on_accept, h);
    h->max_conns = lim->max_connections;
    h->adopt = event_new(base, -1, 0, on_adopt, h);
    h->sock = bind_listener(h->http, base, host, port, lim->reuse_port);
    if (!h->sock) {
        snprintf(err, errlen, "http: cannot listen on %s:%d", host, port);
        evhttp_free(h->http);
        event_free(h->adopt);
        free(h);
        return NULL;
    }
    h->listener = evhttp_bound_socket_get_listener(h->sock);
    struct sockaddr_storage ss = {0};
    ev_socklen_t sl = sizeof(ss);
    evutil_socket_t fd = evhttp_bound_socket_get_fd(h->sock);
    /* The analyzer does not know that getsockname() fills ss. */
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Assign)
        in_port_t bound = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port;
        h->port = ntohs(bound);
    }
    return h;
}

void httpd_set_observer(httpd *h, httpd_observer cb, void *arg)
{
    h->observer = cb;
    h->observer_arg = arg;
}

void httpd_set_conn_observer(httpd *h, httpd_conn_observer cb, void *arg)
{
    h->conn_observer = cb;
    h->conn_observer_arg = arg;
}

size_t httpd_connections(const httpd *h)
{
    return h->conns;
}

void httpd_stop_listening(httpd *h)
{
    if (h->sock) {
        evhttp_del_accept_socket(h->http, h->sock);
        h->sock = NULL;
        h->listener = NULL;
    }
}

void httpd_free(httpd *h)
{
    if (!h)
        return;
    httpd_stop_listening(h);
    evhttp_free(h->http); /* closes every connection, each counted out */
    on_adopt(-1, 0, h);   /* any accepted in the pass that ends here */
    event_free(h->adopt);
    free(h->adopting);
    free(h);
}

int httpd_port(const httpd *h)
{
    return h->port;
}

http_method http_req_method(const http_req *r)
{
    if (!r->ev)
        return HTTP_OTHER;
    switch (evhttp_request_get_command(r->ev)) {
    case EVHTTP_REQ_GET:
        return HTTP_GET;
    case EVHTTP_REQ_HEAD:
        return HTTP_HEAD;
    case EVHTTP_REQ_POST:
        return HTTP_POST;
    case EVHTTP_REQ_PUT:
        return HTTP_PUT;
    case EVHTTP_REQ_PATCH:
        return HTTP_PATCH;
    case EVHTTP_REQ_DELETE:
        return HTTP_DELETE;
    default:
        return HTTP_OTHER;
    }
}

const char *http_req_path(const http_req *r)
{
    return r->path;
}

char *http_uri_escape(const char *s)
{
    char *e = evhttp_uriencode(s, -1, 0);
    char *out = xstrdup(e ? e : "");
    free(e);
    return out;
}

char *http_uri_unescape(const char *s, size_t len)
{
    char *raw = xstrndup(s, len);
    size_t n = 0;
    char *d = evhttp_uridecode(raw, 0, &n);
    free(raw);
    if (d && strlen(d) != n) { /* %00 */
        free(d);
        return NULL;
    }
    char *out = d ? xstrdup(d) : NULL;
    free(d);
    return out;
}

/* Parses the query string once, on first use. */
static struct evkeyvalq *query_of(http_req *r)
{
    if (!r->query_parsed) {
        TAILQ_INIT(&r->query);
        const struct evhttp_uri *uri = r->ev ? evhttp_request_get_evhttp_uri(r->ev) : NULL;
        const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
        if (q)
            r->query_bad = evhttp_parse_query_str(q, &r->query) != 0;
        r->query_parsed = true;
    }
    return &r->query;
}

const char *http_req_query(http_req *r, const char *name)
{
    return evhttp_find_header(query_of(r), name);
}

bool http_req_query_each(http_req *r, bool (*fn)(const char *name, const char *value, void *arg),
                         void *arg)
{
    struct evkeyvalq *q = query_of(r);
    if (r->query_bad)
        return false;
    for (struct evkeyval *kv = TAILQ_FIRST(q); kv; kv = TAILQ_NEXT(kv, next))
        if (!fn(kv->key, kv->value, arg))
            return false;
    return true;
}

const char *http_req_header(const http_req *r, const char *name)
{
    return r->ev ? evhttp_find_header(evhttp_request_get_input_headers(r->ev), name) : NULL;
}

const char *http_req_body(http_req *r, size_t *len)
{
    if (!r->body) {
        struct evbuffer *in = r->ev ? evhttp_request_get_input_buffer(r->ev) : NULL;
        size_t n = in ? evbuffer_get_length(in) : 0;
        r->body = xmalloc(n + 1);
        if (n)
            evbuffer_copyout(in, r->body, n);
        r->body[n] = '\0';
        r->body_len = n;
    }
    *len = r->body_len;
    return r->body;
}

void http_req_set_header(http_req *r, const char *name, const char *value)
{
    if (r->ev)
        evhttp_add_header(evhttp_request_get_output_headers(r->ev), name, value);
}

void http_req_on_gone(http_req *r, http_req_gone_cb cb, void *arg)
{
    r->gone = cb;
    r->gone_arg = arg;
}

void http_req_reply(http_req *r, int status, const char *content_type, const char *body, size_t len)
{
    if (r->hangup) { /* from here on evhttp owns the connection again */
        event_free(r->hangup);
        r->hangup = NULL;
    }
    if (r->ev) {
        if (r->conn)
            evhttp_connection_set_closecb(r->conn, on_idle_close, r->server);
        struct evkeyvalq *out = evhttp_request_get_output_headers(r->ev);
        if (content_type)
            evhttp_add_header(out, "Content-Type", content_type);
        if (body && len && http_req_method(r) != HTTP_HEAD)
            evbuffer_add(evhttp_request_get_output_buffer(r->ev), body, len);
        evhttp_send_reply(r->ev, status, reason(status), NULL);
    }
    if (r->server->observer)
        r->server->observer(status, ids_monotonic_us() - r->start_us, r->server->observer_arg);
    req_free(r);
}

void http_req_reply_json(http_req *r, int status, json_t *body)
{
    /* jansson keeps an object's members in insertion order, as JSON_PRESERVE_ORDER asked. */
    jsontext t = {0};
    jsontext_json(&t, body);
    json_decref(body);
    http_req_reply_jsontext(r, status, &t);
}

void http_req_reply_jsontext(http_req *r, int status, jsontext *body)
{
    JSONTEXT_LIT(body, "\n");
    size_t n;
    char *s = jsontext_finish(body, &n);
    if (s)
        http_req_reply(r, status, "application/json", s, n);
    else
        http_req_reply(r, 500, "text/plain", "json encoding failed\n", 20);
    free(s);
}

void http_req_reply_problem(http_req *r, json_t *problem)
{
    int status = (int)json_integer_value(json_object_get(problem, "status"));
    char *s = json_dumps(problem, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(problem);
    size_t n = s ? strlen(s) : 0;
    if (s)
        s[n++] = '\n';
    http_req_reply(r, status ? status : 500, "application/problem+json", s ? s : "", n);
    free(s);
}
