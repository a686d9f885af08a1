/* httpconn.c: the input filter under evhttp: request deadlines, edge answers, lingering close. */
#include "http/httpconn.h"

#include "core/ids.h"
#include "http/problem.h"
#include "core/xalloc.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* After an answer of its own the edge reads and drops what the client still sends for this
   long, or this many bytes, so that the client reads the answer instead of a reset. */
#define LINGER_S     5
#define LINGER_BYTES (16u << 20)
/* A chunk-size line (with its extensions) longer than this is refused. */
#define MAX_CHUNK_LINE 1024

typedef enum {
    ST_HEAD,       /* reading a request head (nothing of it passed on yet) */
    ST_BODY_LEN,   /* passing a Content-Length body on */
    ST_CHUNK_SIZE, /* at a chunk-size line */
    ST_CHUNK_DATA, /* inside a chunk */
    ST_CHUNK_END,  /* at the CRLF after a chunk */
    ST_TRAILER,    /* at the trailer section after the last chunk */
    ST_AWAIT,      /* a whole request went to evhttp: wait for its answer before the next */
    ST_ANSWERED    /* the edge answered: drop input until the client leaves or the linger ends */
} conn_state;

typedef struct conn {
    const httpconn_limits *lim;
    httpconn_answer_cb cb;
    void *cb_arg;
    struct bufferevent *under;         /* the socket's bufferevent, owned by the filter */
    struct bufferevent *bev;           /* the filter, owned by evhttp */
    struct evbuffer_cb_entry *drained; /* on the socket's output */
    struct evbuffer_cb_entry *written; /* on the filter's output: evhttp answering */
    struct event *flush;               /* moves evhttp's answer down to the socket */
    struct event *timer;               /* the head, body or linger deadline */
    struct event *kick;                /* runs the filter again on input that waited for evhttp */
    conn_state state;
    long long start_us;           /* the current request's first byte */
    unsigned long long remaining; /* of a Content-Length body or of a chunk */
    unsigned long long body_total;
    size_t dropped;       /* bytes dropped while lingering */
    size_t trailer_total; /* bytes of the trailer section so far */
    bool shut;            /* our side is shut down for writing */
    bool evhttp_writing;  /* an answer of evhttp went down to the socket */
} conn;

static const char *reason(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    default:
        return "Not Implemented";
    }
}

static void arm(conn *c, int seconds)
{
    struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
    evtimer_add(c->timer, &tv);
}

/* Shuts our side once the answer is out: the client sees its end, we still read. */
static void shut_when_flushed(conn *c)
{
    if (c->state != ST_ANSWERED || c->shut)
        return;
    if (evbuffer_get_length(bufferevent_get_output(c->under)) == 0) {
        evutil_socket_t fd = bufferevent_getfd(c->under);
        if (fd >= 0)
            shutdown(fd, SHUT_WR);
        c->shut = true;
    }
}

/*
 * Writes the edge's own answer (problem+json, Content-Length, Connection: close) under evhttp,
 * reports it, and starts the lingering close. evhttp holds no request that waits for an answer
 * here: the filter passes a request on only whole, and waits for its answer before the next.
 */
static void answer(conn *c, problem_kind kind, const char *detail)
{
    json_t *p = problem_new(kind, detail, NULL);
    char *body = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(p);
    const char *text = body ? body : "{}"; /* out of memory: the status line still goes */
    int status = problem_status(kind);
    struct evbuffer *out = bufferevent_get_output(c->under);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                        status, reason(status), strlen(text) + 1, text);
    free(body);
    c->state = ST_ANSWERED;
    bufferevent_enable(c->under, EV_WRITE);
    /* Flushed now where the socket takes it (it never blocks), so that a client closing at
       once still gets it before evhttp closes the socket on that end of stream. */
    evutil_socket_t fd = bufferevent_getfd(c->under);
    if (fd >= 0)
        evbuffer_write(out, fd);
    shut_when_flushed(c);
    arm(c, LINGER_S);
    if (c->cb)
        c->cb(status, ids_monotonic_us() - (c->start_us ? c->start_us : ids_monotonic_us()),
              c->cb_arg);
}

/* Ends the connection through evhttp, which counts it out. */
static void close_conn(conn *c)
{
    void *evcon = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, NULL, &evcon);
    if (evcon)
        evhttp_connection_free(evcon); /* frees c through the filter */
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    conn *c = arg;
    switch (c->state) {
    case ST_HEAD:
        answer(c, PROBLEM_REQUEST_TIMEOUT,
               "the request head did not arrive within "
               "http.header_timeout_s");
        break;
    case ST_BODY_LEN:
    case ST_CHUNK_SIZE:
    case ST_CHUNK_DATA:
    case ST_CHUNK_END:
    case ST_TRAILER:
        answer(c, PROBLEM_REQUEST_TIMEOUT,
               "the request body did not arrive within "
               "http.body_timeout_s");
        break;
    case ST_ANSWERED:
        close_conn(c);
        break;
    case ST_AWAIT:
        break;
    }
}

/*
 * evhttp's answers. A filter runs its user's write callback as soon as it moved bytes down to the
 * socket's buffer, and evhttp then takes the answer as sent: it frees a connection to close
 * (shutting down and closing the socket, unsent bytes lost) and reads the next request. So the
 * filter holds evhttp's output (filter_out moves nothing), on_flush moves it down once evhttp
 * returned to the loop, and on_kick runs evhttp's write callback only once the socket sent all.
 */
static enum bufferevent_filter_result filter_out(struct evbuffer *src, struct evbuffer *dst,
                                                 ev_ssize_t limit, enum bufferevent_flush_mode mode,
                                                 void *arg)
{
    (void)src, (void)dst, (void)limit, (void)mode, (void)arg;
    return BEV_NEED_MORE;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    conn *c = arg;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!evbuffer_get_length(out))
        return;
    c->evhttp_writing = true;
    evbuffer_add_buffer(bufferevent_get_output(c->under), out);
    bufferevent_enable(c->under, EV_WRITE);
}

/* evhttp writing (an answer, or 100 Continue): moved down from the loop. */
static void on_written(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    conn *c = arg;
    if (info->n_added)
        event_active(c->flush, EV_TIMEOUT, 1);
}

/* The socket's output drained: the edge's answer is out, or evhttp's. */
static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    conn *c = arg;
    if (info->n_deleted && evbuffer_get_length(buf) == 0) {
        shut_when_flushed(c);
        if (c->state != ST_ANSWERED)
            event_active(c->kick, EV_TIMEOUT, 1);
    }
}

/*
 * evhttp's answer is out: its write callback ends the request (and may free the connection).
 * Input that arrived while evhttp handled a request waits in the socket's buffer, and evhttp
 * resuming reads does not look at it: the filter runs on it again.
 */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    conn *c = arg;
    struct bufferevent *bev = c->bev;
    bufferevent_incref(bev); /* c lives as long as its filter */
    if (c->evhttp_writing && !evbuffer_get_length(bufferevent_get_output(c->under)) &&
        !evbuffer_get_length(bufferevent_get_output(bev))) {
        c->evhttp_writing = false;
        /* The request is answered: the next may be read. Not before its answer is out, so that
           an edge answer to the next never goes ahead of it. */
        if (c->state == ST_AWAIT) {
            c->state = ST_HEAD;
            c->start_us = 0;
        }
        bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
    }
    if (c->state != ST_ANSWERED && evbuffer_get_length(bufferevent_get_input(c->under)))
        bufferevent_trigger(c->under, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
    bufferevent_decref(bev);
}

static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* s[0..n) without leading and trailing spaces and tabs. */
static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

static bool eq_ci(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* The outcome of looking at a head: pass it on (body says how long), or answer kind. */
typedef struct head_check {
    bool ok;
    problem_kind kind;
    const char *detail;
    bool chunked;
    unsigned long long length;
} head_check;

static head_check refuse(problem_kind kind, const char *detail)
{
    return (head_check){.ok = false, .kind = kind, .detail = detail};
}

/* Checks the request line: a method evhttp routes, a target, HTTP/1.0 or HTTP/1.1. */
/* The target as evhttp will take it: visible ASCII only (RFC 9112 §3.2), and a URI its parser
   reads (it answers one it cannot in HTML). */
static head_check check_target(const char *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return refuse(PROBLEM_BAD_REQUEST, "the request target is not visible ASCII");
    char *copy = xstrndup(t, n);
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(copy, EVHTTP_URI_NONCONFORMANT);
    free(copy);
    if (!u)
        return refuse(PROBLEM_BAD_REQUEST, "the request target is not a URI");
    evhttp_uri_free(u);
    return (head_check){.ok = true};
}

static head_check check_request_line(const char *s, size_t n, bool *v11)
{
    const char *sp1 = memchr(s, ' ', n);
    if (!sp1 || sp1 == s)
        return refuse(PROBLEM_BAD_REQUEST, "the request line is not: method target version");
    const char *rest = sp1 + 1;
    size_t rn = n - (size_t)(rest - s);
    const char *sp2 = memchr(rest, ' ', rn);
    if (!sp2 || sp2 == rest || memchr(sp2 + 1, ' ', rn - (size_t)(sp2 + 1 - rest)))
        return refuse(PROBLEM_BAD_REQUEST, "the request line is not: method target version");
    size_t mlen = (size_t)(sp1 - s);
    for (size_t i = 0; i < mlen; i++)
        if (!is_tchar(s[i]))
            return refuse(PROBLEM_BAD_REQUEST, "the method is not a token");
    const char *ver = sp2 + 1;
    size_t vlen = rn - (size_t)(ver - rest);
    if (vlen == 8 && memcmp(ver, "HTTP/1.1", 8) == 0)
        *v11 = true;
    else if (vlen == 8 && memcmp(ver, "HTTP/1.0", 8) == 0)
        *v11 = false;
    else
        return refuse(PROBLEM_BAD_REQUEST, "the version is not HTTP/1.0 or HTTP/1.1");
    static const char *const known[] = {"GET",   "HEAD",   "POST",    "PUT",
                                        "PATCH", "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i]) == mlen && memcmp(s, known[i], mlen) == 0)
            return check_target(rest, (size_t)(sp2 - rest));
    if (mlen == 7 && memcmp(s, "CONNECT", 7) == 0)
        return refuse(PROBLEM_NOT_IMPLEMENTED, "CONNECT is not supported: this is no proxy");
    return refuse(PROBLEM_NOT_IMPLEMENTED, "the method is not implemented");
}

/* A trailer line is a field: a token, a colon, a value without control characters but tab. */
static bool trailer_field(const char *s, size_t n)
{
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s)
        return false;
    for (const char *p = s; p < colon; p++)
        if (!is_tchar(*p))
            return false;
    for (const char *p = colon + 1; p < s + n; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* Checks one header field of a head; counts Host, reads the body's framing. */
static head_check check_field(const char *s, size_t n, head_check *h, int *hosts, bool *has_cl,
                              bool *has_te)
{
    if (s[0] == ' ' || s[0] == '\t')
        return refuse(PROBLEM_BAD_REQUEST, "obsolete line folding in a header field");
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s)
        return refuse(PROBLEM_BAD_REQUEST, "a header line is not a field");
    size_t nlen = (size_t)(colon - s);
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar(s[i]))
            return refuse(PROBLEM_BAD_REQUEST, "a header field name is not a token");
    const char *v = colon + 1;
    size_t vn = n - nlen - 1;
    trim(&v, &vn);
    for (size_t i = 0; i < vn; i++)
        if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return refuse(PROBLEM_BAD_REQUEST, "a header field value holds a control character");
    if (eq_ci(s, nlen, "Host")) {
        (*hosts)++;
    } else if (eq_ci(s, nlen, "Content-Length")) {
        unsigned long long len = 0;
        if (vn == 0 || vn > 18)
            return refuse(PROBLEM_BAD_REQUEST, "Content-Length is not a number");
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                return refuse(PROBLEM_BAD_REQUEST, "Content-Length is not a number");
            len = len * 10 + (unsigned)(v[i] - '0');
        }
        if (*has_cl && len != h->length)
            return refuse(PROBLEM_BAD_REQUEST, "Content-Length given twice, differently");
        *has_cl = true;
        h->length = len;
    } else if (eq_ci(s, nlen, "Transfer-Encoding")) {
        if (*has_te || !eq_ci(v, vn, "chunked"))
            return refuse(PROBLEM_NOT_IMPLEMENTED, "the only transfer coding taken is chunked");
        *has_te = true;
        h->chunked = true;
    } else if (eq_ci(s, nlen, "Expect")) {
        if (!eq_ci(v, vn, "100-continue"))
            return refuse(PROBLEM_EXPECTATION_FAILED, "the only expectation met is 100-continue");
    }
    return (head_check){.ok = true};
}

/* Checks a whole head (s[0..n), ending with its empty line) against RFC 9112 and the limits. */
static head_check check_head(const conn *c, const char *s, size_t n)
{
    head_check h = {.ok = true};
    int hosts = 0;
    bool has_cl = false, has_te = false, v11 = false;
    const char *end = s + n;
    bool first = true;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t len = (size_t)(nl - s);
        if (len && s[len - 1] == '\r')
            len--;
        if (len == 0)
            break;
        head_check r = first ? check_request_line(s, len, &v11)
                             : check_field(s, len, &h, &hosts, &has_cl, &has_te);
        if (!r.ok)
            return r;
        first = false;
        s = nl + 1;
    }
    if (v11 && hosts != 1)
        return refuse(PROBLEM_BAD_REQUEST, hosts ? "more than one Host field"
                                                 : "an HTTP/1.1 request needs a Host field");
    if (has_te && has_cl)
        return refuse(PROBLEM_BAD_REQUEST, "both Content-Length and Transfer-Encoding");
    if (has_te && !v11)
        return refuse(PROBLEM_BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request");
    if (has_cl && h.length > c->lim->max_body)
        return refuse(PROBLEM_TOO_LARGE, "the body is larger than the server takes");
    return h;
}

/* The length of the head at the start of buf up to its empty line, 0 while incomplete. */
static size_t head_length(const char *buf, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i - 1] == '\n')
            return i + 1;
        if (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n')
            return i + 1;
    }
    return 0;
}

/* A whole request went on: evhttp answers it before the filter looks at the next. */
static void request_done(conn *c)
{
    evtimer_del(c->timer);
    c->state = ST_AWAIT;
}

/* A head is complete in src: check it and pass it on, or answer. */
static void take_head(conn *c, struct evbuffer *src, struct evbuffer *dst, size_t hlen,
                      const char *buf)
{
    head_check h = check_head(c, buf, hlen);
    if (!h.ok) {
        answer(c, h.kind, h.detail);
        return;
    }
    evbuffer_remove_buffer(src, dst, hlen);
    evtimer_del(c->timer);
    if (h.chunked) {
        c->state = ST_CHUNK_SIZE;
        c->body_total = 0;
    } else if (h.length) {
        c->state = ST_BODY_LEN;
        c->remaining = h.length;
    } else {
        request_done(c);
        return;
    }
    arm(c, c->lim->body_timeout_s);
}

/* One step of a chunked body; false when it needs more input. */
static bool chunk_step(conn *c, struct evbuffer *src, struct evbuffer *dst)
{
    size_t avail = evbuffer_get_length(src);
    if (c->state == ST_CHUNK_DATA) {
        size_t n = c->remaining < avail ? (size_t)c->remaining : avail;
        evbuffer_remove_buffer(src, dst, n);
        c->remaining -= n;
        if (c->remaining)
            return false;
        c->state = ST_CHUNK_END;
        return true;
    }
    size_t eol_len = 0;
    struct evbuffer_ptr eol = evbuffer_search_eol(src, NULL, &eol_len, EVBUFFER_EOL_CRLF);
    if (eol.pos < 0) {
        if (c->state == ST_TRAILER && c->trailer_total + avail > c->lim->max_head)
            answer(c, PROBLEM_HEADERS_TOO_LARGE,
                   "the trailer section is larger than the server takes");
        else if (c->state != ST_TRAILER && avail > MAX_CHUNK_LINE)
            answer(c, PROBLEM_BAD_REQUEST, "a chunk-size line is too long");
        return false;
    }
    size_t len = (size_t)eol.pos;
    char *line = (char *)evbuffer_pullup(src, (ev_ssize_t)(len + eol_len));
    if (c->state == ST_CHUNK_END) {
        if (len != 0) {
            answer(c, PROBLEM_BAD_REQUEST, "a chunk is longer than its size");
            return false;
        }
        c->state = ST_CHUNK_SIZE;
    } else if (c->state == ST_TRAILER) {
        /* Trailer fields are checked and dropped (RFC 9112 §7.1.2 lets a recipient discard
           them; nothing here reads one): evhttp, which counts them against the head's size
           and answers in HTML, sees only the empty line that ends the body. */
        if (len == 0) {
            evbuffer_remove_buffer(src, dst, len + eol_len);
            request_done(c);
            return false;
        }
        c->trailer_total += len + eol_len;
        if (c->trailer_total > c->lim->max_head) {
            answer(c, PROBLEM_HEADERS_TOO_LARGE,
                   "the trailer section is larger than the server takes");
            return false;
        }
        if (!trailer_field(line, len)) {
            answer(c, PROBLEM_BAD_REQUEST, "a trailer line is not a field");
            return false;
        }
        evbuffer_drain(src, len + eol_len);
        return true;
    } else { /* ST_CHUNK_SIZE: 1*HEXDIG [BWS ; chunk-ext] */
        unsigned long long size = 0;
        size_t i = 0;
        for (; i < len && i < 16; i++) {
            char ch = line[i];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0)
                break;
            size = size * 16 + (unsigned)d;
        }
        size_t j = i;
        while (j < len && (line[j] == ' ' || line[j] == '\t'))
            j++;
        if (i == 0 || i == 16 || (j < len && line[j] != ';')) {
            answer(c, PROBLEM_BAD_REQUEST, "a chunk size is not a hexadecimal number");
            return false;
        }
        c->body_total += size;
        if (c->body_total > c->lim->max_body) {
            answer(c, PROBLEM_TOO_LARGE, "the body is larger than the server takes");
            return false;
        }
        c->remaining = size;
        c->state = size ? ST_CHUNK_DATA : ST_TRAILER;
        c->trailer_total = 0;
        /* evhttp refuses chunk extensions (RFC 9112 §7.1.1 says to ignore those not
           understood, which is all of them here): it gets the size alone. */
        evbuffer_drain(src, len + eol_len);
        evbuffer_add_printf(dst, "%llx\r\n", size);
        return true;
    }
    evbuffer_remove_buffer(src, dst, len + eol_len);
    return true;
}

static enum bufferevent_filter_result filter_in(struct evbuffer *src, struct evbuffer *dst,
                                                ev_ssize_t limit, enum bufferevent_flush_mode mode,
                                                void *arg)
{
    (void)limit, (void)mode;
    conn *c = arg;
    size_t dst0 = evbuffer_get_length(dst);
#define PASSED (evbuffer_get_length(dst) > dst0 ? BEV_OK : BEV_NEED_MORE)
    for (;;) {
        size_t avail = evbuffer_get_length(src);
        switch (c->state) {
        case ST_ANSWERED:
            c->dropped += avail;
            evbuffer_drain(src, avail);
            if (c->dropped > LINGER_BYTES)
                arm(c, 0);
            return BEV_NEED_MORE;
        case ST_AWAIT:
            return PASSED;
        case ST_HEAD: {
            /* Empty lines before a request line are ignored (RFC 9112 §2.2). */
            while (avail) {
                unsigned char ch;
                evbuffer_copyout(src, &ch, 1);
                if (ch != '\r' && ch != '\n')
                    break;
                evbuffer_drain(src, 1);
                avail--;
            }
            if (!avail)
                return PASSED;
            if (!evtimer_pending(c->timer, NULL)) {
                c->start_us = ids_monotonic_us();
                arm(c, c->lim->header_timeout_s);
            }
            size_t look = avail < c->lim->max_head + 1 ? avail : c->lim->max_head + 1;
            const char *buf = (const char *)evbuffer_pullup(src, (ev_ssize_t)look);
            size_t hlen = head_length(buf, look);
            if (hlen == 0 || hlen > c->lim->max_head) {
                if (look > c->lim->max_head) {
                    answer(c, PROBLEM_HEADERS_TOO_LARGE,
                           "the request line and header fields are larger than the server "
                           "takes");
                    continue;
                }
                return PASSED;
            }
            take_head(c, src, dst, hlen, buf);
            break;
        }
        case ST_BODY_LEN: {
            if (!avail)
                return PASSED;
            size_t n = c->remaining < avail ? (size_t)c->remaining : avail;
            evbuffer_remove_buffer(src, dst, n);
            c->remaining -= n;
            if (!c->remaining)
                request_done(c);
            break;
        }
        default: /* the chunked states */
            if (!chunk_step(c, src, dst) && c->state != ST_AWAIT && c->state != ST_ANSWERED)
                return PASSED;
            break;
        }
    }
#undef PASSED
}

static void conn_free(void *arg)
{
    conn *c = arg;
    evbuffer_remove_cb_entry(bufferevent_get_output(c->under), c->drained);
    event_free(c->flush);
    event_free(c->timer);
    event_free(c->kick);
    free(c);
}

struct bufferevent *httpconn_wrap(struct bufferevent *under, const httpconn_limits *lim,
                                  httpconn_answer_cb cb, void *arg)
{
    struct event_base *base = bufferevent_get_base(under);
    conn *c = xcalloc(1, sizeof(*c));
    c->lim = lim;
    c->cb = cb;
    c->cb_arg = arg;
    c->under = under;
    c->state = ST_HEAD;
    c->timer = evtimer_new(base, on_timer, c);
    c->kick = event_new(base, -1, 0, on_kick, c);
    c->flush = event_new(base, -1, 0, on_flush, c);
    c->drained = evbuffer_add_cb(bufferevent_get_output(under), on_output, c);
    c->bev =
        bufferevent_filter_new(under, filter_in, filter_out, BEV_OPT_CLOSE_ON_FREE, conn_free, c);
    if (!c->bev) {
        conn_free(c);
        bufferevent_free(under);
        return NULL;
    }
    /* Freed with the filter's output buffer. */
    c->written = evbuffer_add_cb(bufferevent_get_output(c->bev), on_written, c);
    return c->bev;
}
