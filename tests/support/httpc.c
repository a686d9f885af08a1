/* httpc.c: blocking HTTP client over a loopback socket, with a deadline on every step. */
#include "httpc.h"
#include "waitfor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short ev, long long deadline)
{
    long long left = deadline - now_ms();
    if (left <= 0)
        return -1;
    struct pollfd p = {.fd = fd, .events = ev};
    return poll(&p, 1, (int)left) == 1 ? 0 : -1;
}

httpc_response httpc_request(int port, const char *method, const char *path,
                             const char *extra_headers, const char *body, int timeout_ms)
{
    httpc_response r = {0};
    long long deadline = now_ms() + timeout_ms;
    int fd = httpc_connect(port);
    if (fd < 0)
        return r;
    char *out = NULL;
    int n = asprintf(&out,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n%s%s\r\n%s",
                     method, path, body ? strlen(body) : 0,
                     body ? "Content-Type: application/json\r\n" : "",
                     extra_headers ? extra_headers : "", body ? body : "");
    if (n < 0) {
        close(fd);
        return r;
    }
    size_t sent = httpc_send(fd, out, (size_t)n, timeout_ms);
    free(out);
    long long left = deadline - now_ms();
    if (sent == (size_t)n && left > 0)
        r = httpc_read(fd, (int)left);
    close(fd);
    return r;
}

const char *httpc_header(const httpc_response *r, const char *name, char *buf, size_t len)
{
    if (!r->headers)
        return NULL;
    size_t nlen = strlen(name);
    for (const char *line = strstr(r->headers, "\r\n"); line && line[2];
         line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nlen) == 0 && h[nlen] == ':') {
            const char *v = h + nlen + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t vlen = e ? (size_t)(e - v) : strlen(v);
            snprintf(buf, len, "%.*s", (int)vlen, v);
            return buf;
        }
    }
    return NULL;
}

void httpc_free(httpc_response *r)
{
    free(r->headers);
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

long long httpc_metric(int port, const char *name)
{
    httpc_response r = httpc_request(port, "GET", "/metrics", NULL, NULL, 5000);
    long long v = -1;
    size_t n = strlen(name);
    for (const char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, name, n) == 0 && l[n] == ' ')
            v = atoll(l + n + 1);
    }
    httpc_free(&r);
    return v;
}

typedef struct metric_wait {
    int port;
    const char *name;
    long long want, value;
    bool at_least; /* value >= want will do */
} metric_wait;

static bool metric_holds(void *arg)
{
    metric_wait *w = arg;
    w->value = httpc_metric(w->port, w->name);
    return w->at_least ? w->value >= w->want : w->value == w->want;
}

long long httpc_metric_becomes(int port, const char *name, long long want, int timeout_ms)
{
    metric_wait w = {.port = port, .name = name, .want = want};
    waitfor(metric_holds, &w, timeout_ms);
    return w.value;
}

long long httpc_metric_reaches(int port, const char *name, long long min, int timeout_ms)
{
    metric_wait w = {.port = port, .name = name, .want = min, .at_least = true};
    waitfor(metric_holds, &w, timeout_ms);
    return w.value;
}

int httpc_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

size_t httpc_send(int fd, const void *buf, size_t len, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    size_t sent = 0;
    while (sent < len) {
        if (wait_fd(fd, POLLOUT, deadline) != 0)
            break;
        ssize_t w = send(fd, (const char *)buf + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    return sent;
}

/* The Content-Length of a header block, or -1. */
static long long content_length(const char *head)
{
    for (const char *l = strstr(head, "\r\n"); l; l = strstr(l + 2, "\r\n"))
        if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
            return atoll(l + 17);
    return -1;
}

httpc_response httpc_read(int fd, int timeout_ms)
{
    httpc_response r = {0};
    long long deadline = now_ms() + timeout_ms;
    size_t cap = 65536, len = 0;
    char *in = malloc(cap);
    if (!in)
        return r;
    in[0] = '\0';
    for (;;) {
        char *end = strstr(in, "\r\n\r\n");
        if (end) {
            *end = '\0';
            long long cl = content_length(in);
            *end = '\r';
            if (cl >= 0 && len >= (size_t)(end + 4 - in) + (size_t)cl) {
                len = (size_t)(end + 4 - in) + (size_t)cl;
                break;
            }
        }
        if (wait_fd(fd, POLLIN, deadline) != 0) {
            len = 0; /* incomplete at the deadline: no answer */
            break;
        }
        if (len + 4096 > cap) {
            char *bigger = realloc(in, cap *= 2);
            if (!bigger)
                break;
            in = bigger;
        }
        ssize_t got = recv(fd, in + len, cap - len - 1, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
        in[len] = '\0';
    }
    in[len] = '\0';
    char *end = strstr(in, "\r\n\r\n");
    if (end && sscanf(in, "HTTP/1.%*d %d", &r.status) == 1) {
        r.headers = strndup(in, (size_t)(end - in) + 2);
        r.body_len = len - (size_t)(end + 4 - in);
        r.body = malloc(r.body_len + 1);
        memcpy(r.body, end + 4, r.body_len);
        r.body[r.body_len] = '\0';
        r.json = r.body_len ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
    } else {
        r.status = 0;
    }
    free(in);
    return r;
}

bool httpc_closed_within(int fd, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    char buf[4096];
    for (;;) {
        if (wait_fd(fd, POLLIN, deadline) != 0)
            return false;
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return true;
    }
}
