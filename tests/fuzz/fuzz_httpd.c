/*
 * fuzz_httpd.c: libFuzzer harness of the HTTP edge (httpd.c over httpconn.c over evhttp).
 *
 * Each input is written as it is to a loopback connection to a server on this thread's event
 * loop (small limits, short deadlines), the client's side is then shut for writing, and the loop
 * runs until the server closes the connection (bounded). Every answer read must have a well
 * formed status line, and every 4xx and 5xx a Content-Length and the problem+json media type,
 * never a page libevent wrote by itself. The handler answers each request 200 "ok".
 */
#include "core/log.h"
#include "http/httpd.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A connection the server does not close within this gets no more reading: a finding. */
#define CLOSE_WITHIN_MS 3000

static struct event_base *base;
static httpd *server;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_request(http_req *req, void *arg)
{
    (void)arg;
    http_req_reply(req, 200, "text/plain", "ok", 2);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_init("fuzz_httpd", LOG_FATAL);
    base = event_base_new();
    httpd_options lim = {.max_body = 1024,
                         .max_headers_size = 2048,
                         .timeout_s = 1,
                         .header_timeout_s = 1,
                         .body_timeout_s = 1};
    char err[256];
    server = httpd_new(base, "127.0.0.1", 0, &lim, on_request, NULL, err, sizeof err);
    if (!server) {
        fprintf(stderr, "fuzz_httpd: %s\n", err);
        exit(1);
    }
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)httpd_port(server)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS && errno != EINTR)
        abort();
    return fd;
}

/* The value of header name in the head [h, end), or NULL. */
static const char *header(const char *h, const char *end, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (const char *l = h; l < end;) {
        const char *eol = memchr(l, '\n', (size_t)(end - l));
        if (!eol)
            eol = end;
        if ((size_t)(eol - l) > n && strncasecmp(l, name, n) == 0 && l[n] == ':') {
            const char *v = l + n + 1;
            while (v < eol && *v == ' ')
                v++;
            *len = (size_t)(eol - v) - (eol > v && eol[-1] == '\r');
            return v;
        }
        l = eol + 1;
    }
    return NULL;
}

/* Checks every answer in out[0..n): the handler's bodies never hold "HTTP/1.", the edge's
   problem bodies neither, so each occurrence starts an answer. */
static void check_answers(const char *out, size_t n)
{
    const char *end = out + n;
    for (const char *p = memmem(out, n, "HTTP/1.", 7); p;
         p = memmem(p + 1, (size_t)(end - p - 1), "HTTP/1.", 7)) {
        const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!head_end)
            break; /* the connection was cut inside an answer: nothing to judge */
        int status = 0;
        if (sscanf(p, "HTTP/1.%*1[01] %3d ", &status) != 1 || status < 100 || status > 599) {
            fprintf(stderr, "fuzz_httpd: a malformed status line: %.60s\n", p);
            abort();
        }
        if (status < 400)
            continue; /* the handler's (a HEAD's in HTTP/1.0 has no Content-Length) */
        size_t len;
        if (!header(p, head_end, "Content-Length", &len)) {
            fprintf(stderr, "fuzz_httpd: %d without Content-Length:\n%.*s\n", status,
                    (int)(head_end - p), p);
            abort();
        }
        const char *ct = header(p, head_end, "Content-Type", &len);
        if (!ct || len != 24 || strncmp(ct, "application/problem+json", 24) != 0) {
            fprintf(stderr, "fuzz_httpd: %d not in problem+json:\n%.*s\n", status,
                    (int)(head_end - p), p);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = connect_server();
    size_t sent = 0, cap = 1 << 16, got = 0;
    char *out = malloc(cap);
    if (!out)
        abort();
    bool shut = false, closed = false;
    long long deadline = now_ms() + CLOSE_WITHIN_MS;
    while (!closed && now_ms() < deadline) {
        event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
        if (sent < size) {
            ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR && errno != ENOTCONN)
                sent = size; /* the server closed first */
        }
        if (sent == size && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        for (;;) {
            if (got == cap) {
                char *more = realloc(out, cap *= 2);
                if (!more)
                    abort();
                out = more;
            }
            ssize_t r = recv(fd, out + got, cap - got, 0);
            if (r > 0) {
                got += (size_t)r;
                continue;
            }
            if (r == 0 || (errno != EAGAIN && errno != EINTR && errno != ENOTCONN))
                closed = true;
            break;
        }
        if (!closed)
            event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    }
    close(fd);
    if (!closed) {
        fprintf(stderr, "fuzz_httpd: the server kept the connection past %d ms\n", CLOSE_WITHIN_MS);
        abort();
    }
    check_answers(out, got);
    free(out);
    /* Let the server see the close and free its side before the next input. */
    for (int i = 0; i < 8 && httpd_connections(server) > 0; i++)
        event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
    return 0;
}
