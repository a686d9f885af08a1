/*
 * test_httpd.c: the HTTP server's own bookkeeping, in process: every connection counted in and
 * out whichever way it ends, and the cap on connections (accepting pauses at it and resumes
 * when one closes); and the edge under evhttp (httpconn.c): its own answers, observed like the
 * others, its deadlines, and its order on a pipelined connection. The clients are non-blocking
 * sockets driven from the server's loop.
 */
#include "checkrun.h"
#include "http/httpd.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HELD 64

typedef struct server {
    struct event_base *base;
    httpd *h;
    http_req *held[MAX_HELD]; /* requests to /hold, answered by release() */
    int nheld;
    int gone;         /* held requests whose client left */
    int opened;       /* HTTPD_CONN_OPENED seen */
    int closed;       /* HTTPD_CONN_CLOSED seen */
    int paused;       /* HTTPD_ACCEPT_PAUSED seen */
    int requests;     /* handler calls */
    int answers[600]; /* the observer's count by status */
} server;

static void on_gone(http_req *r, void *arg)
{
    server *s = arg;
    for (int i = 0; i < s->nheld; i++)
        if (s->held[i] == r) {
            s->held[i] = s->held[--s->nheld];
            s->gone++;
            return;
        }
    ck_abort_msg("gone callback for a request not held");
}

static void handler(http_req *r, void *arg)
{
    server *s = arg;
    s->requests++;
    if (strcmp(http_req_path(r), "/hold") == 0 && s->nheld < MAX_HELD) {
        s->held[s->nheld++] = r;
        http_req_on_gone(r, on_gone, s);
        return;
    }
    http_req_reply(r, 200, "text/plain", "ok\n", 3);
}

static void on_conn(httpd_conn_event ev, void *arg)
{
    server *s = arg;
    if (ev == HTTPD_CONN_OPENED)
        s->opened++;
    else if (ev == HTTPD_CONN_CLOSED)
        s->closed++;
    else
        s->paused++;
}

static void on_answer(int status, long long elapsed_us, void *arg)
{
    server *s = arg;
    (void)elapsed_us;
    if (status > 0 && status < 600)
        s->answers[status]++;
}

static void server_start(server *s, size_t max_connections)
{
    memset(s, 0, sizeof(*s));
    s->base = event_base_new();
    ck_assert_ptr_nonnull(s->base);
    httpd_options lim = {.max_body = 1024,
                         .max_headers_size = 4096,
                         .timeout_s = 30,
                         .header_timeout_s = 1,
                         .body_timeout_s = 1,
                         .max_connections = max_connections};
    char err[256];
    s->h = httpd_new(s->base, "127.0.0.1", 0, &lim, handler, s, err, sizeof(err));
    ck_assert_msg(s->h != NULL, "%s", err);
    httpd_set_conn_observer(s->h, on_conn, s);
    httpd_set_observer(s->h, on_answer, s);
}

static void server_stop(server *s)
{
    httpd_free(s->h);
    event_base_free(s->base);
}

static void release(server *s)
{
    while (s->nheld > 0)
        http_req_reply(s->held[--s->nheld], 200, "text/plain", "late\n", 5);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Runs the loop until done(s) holds or ms pass; true if it held. */
static bool pump_until(server *s, bool (*done)(server *), int ms)
{
    long long end = now_ms() + ms;
    while (!done(s)) {
        if (now_ms() >= end)
            return false;
        event_base_loop(s->base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
    return true;
}

static bool none_open(server *s)
{
    return httpd_connections(s->h) == 0;
}

static int client(const server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)httpd_port(s->h))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    ck_assert_msg(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
    return fd;
}

static int opened_before;

static bool one_more_open(server *s)
{
    return s->opened > opened_before;
}

/* A client the server has accepted. */
static int accepted_client(server *s)
{
    opened_before = s->opened;
    int fd = client(s);
    ck_assert_msg(pump_until(s, one_more_open, 5000), "not accepted");
    return fd;
}

/* Writes all of text; small writes to a fresh loopback socket do not block. */
static void say(server *s, int fd, const char *text)
{
    size_t n = strlen(text), off = 0;
    long long end = now_ms() + 5000;
    while (off < n) {
        ssize_t w = send(fd, text + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        ck_assert_msg(w < 0 && (errno == EAGAIN || errno == ENOTCONN), "send: %s", strerror(errno));
        ck_assert_msg(now_ms() < end, "send did not complete");
        event_base_loop(s->base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

/*
 * Pumps the loop for up to ms while reading fd; returns the bytes read (NUL-terminated in buf)
 * once the peer closed, or, unless whole, once a whole header block has come.
 */
static size_t listen_to(server *s, int fd, char *buf, size_t len, int ms, bool whole, bool *eof)
{
    size_t got = 0;
    long long end = now_ms() + ms;
    *eof = false;
    buf[0] = '\0';
    while (now_ms() < end && got + 1 < len && (whole || !strstr(buf, "\r\n\r\n"))) {
        event_base_loop(s->base, EVLOOP_NONBLOCK);
        ssize_t r = recv(fd, buf + got, len - 1 - got, 0);
        if (r > 0) {
            got += (size_t)r;
            buf[got] = '\0';
        } else if (r == 0 || (errno != EAGAIN && errno != ENOTCONN)) {
            *eof = true;
            break;
        } else {
            usleep(1000);
        }
    }
    return got;
}

static size_t hear(server *s, int fd, char *buf, size_t len, int ms, bool *eof)
{
    return listen_to(s, fd, buf, len, ms, false, eof);
}

/* Sends one request and returns the status of its answer (0: none within 5 s). */
static int ask(server *s, int fd, const char *request)
{
    char buf[4096];
    bool eof;
    say(s, fd, request);
    hear(s, fd, buf, sizeof(buf), 5000, &eof);
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    return status;
}

/* ---- every way a connection ends is counted out ---- */

typedef struct ending {
    const char *name;
    void (*run)(server *s);
} ending;

static void end_idle(server *s)
{
    close(accepted_client(s));
}

static void end_partial_line(server *s)
{
    int fd = accepted_client(s);
    say(s, fd, "GET /no");
    close(fd);
}

static void end_after_answer(server *s)
{
    int fd = client(s);
    ck_assert_int_eq(ask(s, fd, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    ck_assert_int_eq(ask(s, fd, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n"), 200); /* kept alive */
    close(fd);
}

static void end_server_closes(server *s)
{
    int fd = client(s);
    ck_assert_int_eq(ask(s, fd, "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 200);
    close(fd);
}

static void end_bad_request(server *s)
{
    int fd = client(s);
    ck_assert_int_eq(ask(s, fd, "NONSENSE\r\n\r\n"), 400);
    close(fd);
}

static void end_body_too_big(server *s)
{
    int fd = client(s);
    ck_assert_int_eq(ask(s, fd, "POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"),
                     413);
    close(fd);
}

static bool one_held(server *s)
{
    return s->nheld == 1;
}

static void end_client_leaves_held(server *s)
{
    int fd = client(s);
    say(s, fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(pump_until(s, one_held, 5000));
    int gone = s->gone;
    close(fd);
    ck_assert(pump_until(s, none_open, 5000));
    ck_assert_int_eq(s->gone, gone + 1);
}

static void end_held_then_answered(server *s)
{
    int fd = client(s);
    say(s, fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(pump_until(s, one_held, 5000));
    release(s);
    char buf[512];
    bool eof;
    hear(s, fd, buf, sizeof(buf), 5000, &eof);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "got: %s", buf);
    close(fd);
}

static const ending endings[] = {
    {"idle", end_idle},
    {"partial request line", end_partial_line},
    {"after two answers", end_after_answer},
    {"Connection: close", end_server_closes},
    {"bad request", end_bad_request},
    {"body too big", end_body_too_big},
    {"client leaves while held", end_client_leaves_held},
    {"held, then answered", end_held_then_answered},
};

START_TEST(every_way_a_connection_ends_is_counted_out)
{
    const ending *e = &endings[_i];
    server s;
    server_start(&s, 0);
    for (int round = 0; round < 3; round++)
        e->run(&s);
    ck_assert_msg(pump_until(&s, none_open, 5000), "%s: %zu connections still counted", e->name,
                  httpd_connections(s.h));
    ck_assert_int_eq(s.opened, 3);
    ck_assert_int_eq(s.closed, 3);
    ck_assert_int_eq(s.paused, 0);
    server_stop(&s);
}
END_TEST

/* ---- the cap ---- */

#define CAP 4

static bool cap_reached(server *s)
{
    return httpd_connections(s->h) == CAP && s->paused == 1;
}

START_TEST(the_connection_cap_pauses_and_resumes_accepting)
{
    server s;
    server_start(&s, CAP);
    int idle[CAP];
    for (int i = 0; i < CAP; i++)
        idle[i] = client(&s);
    ck_assert(pump_until(&s, cap_reached, 5000));

    /* One more: the kernel completes its handshake, but nothing accepts it. */
    int extra = client(&s);
    say(&s, extra, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n");
    char buf[512];
    bool eof;
    size_t got = hear(&s, extra, buf, sizeof(buf), 300, &eof);
    ck_assert_msg(got == 0 && !eof, "answered beyond the cap: %s", buf);
    ck_assert_uint_eq(httpd_connections(s.h), CAP);
    ck_assert_int_eq(s.opened, CAP);

    /* A connection closes: the waiting one is accepted and answered. */
    close(idle[0]);
    hear(&s, extra, buf, sizeof(buf), 5000, &eof);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "got: %s", buf);
    ck_assert_int_eq(s.opened, CAP + 1);
    ck_assert_uint_eq(httpd_connections(s.h), CAP);
    ck_assert_int_eq(s.requests, 1);

    close(extra);
    for (int i = 1; i < CAP; i++)
        close(idle[i]);
    ck_assert(pump_until(&s, none_open, 5000));
    ck_assert_int_eq(s.closed, CAP + 1);
    server_stop(&s);
}
END_TEST

/* At the cap and after, requests keep flowing on the connections already open. */
START_TEST(open_connections_are_served_at_the_cap)
{
    server s;
    server_start(&s, CAP);
    int fds[CAP];
    for (int i = 0; i < CAP; i++)
        fds[i] = client(&s);
    ck_assert(pump_until(&s, cap_reached, 5000));
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < CAP; i++)
            ck_assert_int_eq(ask(&s, fds[i], "GET /now HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    for (int i = 0; i < CAP; i++)
        close(fds[i]);
    ck_assert(pump_until(&s, none_open, 5000));
    server_stop(&s);
}
END_TEST

/* Freeing the server with connections open, some holding requests, counts them all out. */
static bool three_held_five_open(server *s)
{
    return s->nheld == 3 && s->opened == 5;
}

START_TEST(the_server_frees_with_connections_open)
{
    server s;
    server_start(&s, 0);
    int fds[5];
    for (int i = 0; i < 5; i++) {
        fds[i] = client(&s);
        if (i < 3)
            say(&s, fds[i], "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    ck_assert(pump_until(&s, three_held_five_open, 5000));
    httpd_free(s.h);
    ck_assert_int_eq(s.closed, 5);
    ck_assert_int_eq(s.gone, 3);
    event_base_free(s.base);
    for (int i = 0; i < 5; i++)
        close(fds[i]);
}
END_TEST

/* ---- the edge: its own answers, observed; deadlines; order ---- */

/* Reads fd until the peer closes or ms pass; the bytes, NUL-terminated, in buf. */
static size_t hear_all(server *s, int fd, char *buf, size_t len, int ms)
{
    bool eof;
    return listen_to(s, fd, buf, len, ms, true, &eof);
}

static const struct {
    const char *request;
    int status;
} edge_cases[] = {
    {"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413},
    {"POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n", 413},
    {"POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400},
    {"POST /now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
    {"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
    {"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
    {"GET /now HTTP/1.1\r\n\r\n", 400},
    {"GET /now HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400},
    {"GET /now HTTP/1.1\r\nBad Name: x\r\nHost: x\r\n\r\n", 400},
    {"GET /now HTTP/2.0\r\nHost: x\r\n\r\n", 400},
    {"GET  /now HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"BREW /now HTTP/1.1\r\nHost: x\r\n\r\n", 501},
    {"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501},
    {"GET /now HTTP/1.1\r\nHost: x\r\nExpect: nothing\r\n\r\n", 417},
    {"GET /now HTTP/1.1\r\nHost: x\r\n", 408},                              /* head cut */
    {"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc", 408}, /* body */
};

/* Each gets a problem+json of its own that closes the connection, seen by the observer. */
START_TEST(each_bad_request_gets_a_problem_and_a_closed_connection)
{
    server s;
    server_start(&s, 0);
    int fd = client(&s);
    say(&s, fd, edge_cases[_i].request);
    char buf[4096];
    hear_all(&s, fd, buf, sizeof(buf), 5000);
    int status = 0;
    ck_assert_msg(sscanf(buf, "HTTP/1.1 %d", &status) == 1, "no answer to %s",
                  edge_cases[_i].request);
    ck_assert_int_eq(status, edge_cases[_i].status);
    ck_assert_ptr_nonnull(strstr(buf, "\r\nContent-Type: application/problem+json\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\r\nConnection: close\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "\r\nContent-Length: "));
    ck_assert_int_eq(s.answers[status], 1);
    ck_assert_int_eq(s.requests, 0); /* the handler never saw it */
    close(fd);
    ck_assert(pump_until(&s, none_open, 5000));
    server_stop(&s);
}
END_TEST

/*
 * A bad request pipelined behind one the handler holds is answered after it, in order; and a
 * head that waits behind a held request is not on the clock meanwhile.
 */
START_TEST(a_bad_request_behind_a_held_one_waits_its_turn)
{
    server s;
    server_start(&s, 0);
    int fd = client(&s);
    say(&s, fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\nBREW /now HTTP/1.1\r\nHost: x\r\n\r\n");
    char buf[4096];
    hear_all(&s, fd, buf, sizeof(buf), 1500); /* past the head deadline */
    ck_assert_msg(buf[0] == '\0', "answered before the held request: %s", buf);
    ck_assert_int_eq(s.nheld, 1);
    release(&s);
    hear_all(&s, fd, buf, sizeof(buf), 5000);
    const char *late = strstr(buf, "HTTP/1.1 200 "), *edge = strstr(buf, "HTTP/1.1 501 ");
    ck_assert_msg(late && edge && late < edge, "answers: %s", buf);
    close(fd);
    ck_assert(pump_until(&s, none_open, 5000));
    server_stop(&s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("httpd");
    TCase *tc = tcase_create("connections");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, every_way_a_connection_ends_is_counted_out, 0,
                        (int)(sizeof(endings) / sizeof(endings[0])));
    tcase_add_test(tc, the_connection_cap_pauses_and_resumes_accepting);
    tcase_add_test(tc, open_connections_are_served_at_the_cap);
    tcase_add_test(tc, the_server_frees_with_connections_open);
    suite_add_tcase(su, tc);
    TCase *edge = tcase_create("edge");
    tcase_set_timeout(edge, 30);
    tcase_add_loop_test(edge, each_bad_request_gets_a_problem_and_a_closed_connection, 0,
                        (int)(sizeof(edge_cases) / sizeof(edge_cases[0])));
    tcase_add_test(edge, a_bad_request_behind_a_held_one_waits_its_turn);
    suite_add_tcase(su, edge);

    return check_run(su, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
