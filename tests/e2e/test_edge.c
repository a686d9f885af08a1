/*
 * test_edge.c: the HTTP edge on the whole system (common/http/httpconn.c under evhttp): what a
 * client that breaks RFC 9112 or the limits gets (problem+json with Content-Length and
 * Connection: close, counted in the metrics), the head and body deadlines against slow clients,
 * the lingering close after a 413, and keep-alive and pipelining left working.
 */
#include "checkrun.h"
#include "httpc.h"
#include "stack.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static stack st;

#define TIMEOUT_MS 15000
/* The deadlines the stack runs with: short, so that the slow clients below meet them soon. */
#define HEADER_TIMEOUT_S 1
#define BODY_TIMEOUT_S   2
#define MAX_BODY         1024 /* the gateway takes up to COMMANDS_BODY_GRACE more unread */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long answers(int status)
{
    char name[96];
    snprintf(name, sizeof name, "gateway_http_requests_total{status=\"%d\"}", status);
    long long v = httpc_metric(st.http_port, name);
    return v < 0 ? 0 : v;
}

/* Waits (bounded) until the count of answers with status reaches want. */
static long long answers_become(int status, long long want)
{
    char name[96];
    snprintf(name, sizeof name, "gateway_http_requests_total{status=\"%d\"}", status);
    return httpc_metric_becomes(st.http_port, name, want, 5000);
}

/*
 * Checks an edge answer: the status, application/problem+json with Content-Length, the type
 * URI, Connection: close, and the connection closed after it.
 */
static void check_problem(httpc_response *r, int fd, int status, const char *type)
{
    char buf[128];
    ck_assert_msg(r->status == status, "want %d, got %d: %s", status, r->status,
                  r->headers ? r->headers : "(no answer)");
    ck_assert_ptr_nonnull(httpc_header(r, "Content-Type", buf, sizeof buf));
    ck_assert_str_eq(buf, "application/problem+json");
    ck_assert_ptr_nonnull(httpc_header(r, "Content-Length", buf, sizeof buf));
    ck_assert_int_eq(atoll(buf), (long long)r->body_len);
    ck_assert_ptr_nonnull(httpc_header(r, "Connection", buf, sizeof buf));
    ck_assert_str_eq(buf, "close");
    ck_assert_msg(r->json != NULL, "body is not JSON: %s", r->body);
    ck_assert_int_eq(json_integer_value(json_object_get(r->json, "status")), status);
    ck_assert_str_eq(json_string_value(json_object_get(r->json, "type")), type);
    ck_assert_msg(httpc_closed_within(fd, TIMEOUT_MS), "the connection stayed open");
}

/* One line of the issue each: what is sent, what must come back. */
static const struct {
    const char *name;
    const char *request;
    int status;
    const char *type;
} bad[] = {
    {"over-size body, announced",
     "POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n", 413,
     "/problems/too-large"},
    {"bad chunk size",
     "POST /v1/commands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
     "/problems/bad-request"},
    {"unknown method", "BREW /v1/commands HTTP/1.1\r\nHost: x\r\n\r\n", 501,
     "/problems/not-implemented"},
    {"CONNECT", "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", 501,
     "/problems/not-implemented"},
    {"HTTP/1.1 without Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, "/problems/bad-request"},
    {"HTTP/1.1 with two Host fields", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
     "/problems/bad-request"},
    {"an Expect other than 100-continue",
     "POST /v1/commands HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", 417,
     "/problems/expectation-failed"},
    {"a request target with a control character", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400,
     "/problems/bad-request"},
    {"a request target that is no URI", "GET http://[x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400,
     "/problems/bad-request"},
    {"a header value with DEL", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\n\r\n", 400,
     "/problems/bad-request"},
    {"a trailer field with a control character",
     "POST /v1/commands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     "2\r\n{}\r\n0\r\nX-T: a\x01b\r\n\r\n",
     400, "/problems/bad-request"},
    {"a trailer line that is not a field",
     "POST /v1/commands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     "2\r\n{}\r\n0\r\nno colon\r\n\r\n",
     400, "/problems/bad-request"},
    {"Content-Length and Transfer-Encoding",
     "POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, "/problems/bad-request"},
};

/* Sends req on a connection of its own: the answer is the problem given, closing the connection,
   and counted in the metrics. */
static void refused(const char *name, const char *req, int status, const char *type)
{
    long long before = answers(status);
    int fd = httpc_connect(st.http_port);
    ck_assert_int_ge(fd, 0);
    size_t n = strlen(req);
    ck_assert_uint_eq(httpc_send(fd, req, n, TIMEOUT_MS), n);
    httpc_response r = httpc_read(fd, TIMEOUT_MS);
    check_problem(&r, fd, status, type);
    httpc_free(&r);
    close(fd);
    ck_assert_msg(answers_become(status, before + 1) == before + 1,
                  "%s: not counted in gateway_http_requests_total", name);
}

START_TEST(refused_as_problem_json)
{
    refused(bad[_i].name, bad[_i].request, bad[_i].status, bad[_i].type);
}
END_TEST

/* A 64 KiB header gets 431 (not 400), read in full or not. */
START_TEST(huge_header_is_431)
{
    size_t big = (size_t)64 * 1024;
    char *req = malloc(big + 128);
    int n = snprintf(req, 128, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 5);
    refused("a 64 KiB header", req, 431, "/problems/headers-too-large");
    free(req);
}
END_TEST

/*
 * A client that sends its over-size body before reading sees the 413, not a broken pipe: the
 * gateway reads and drops the body for a while after answering (lingering close).
 */
START_TEST(over_size_body_still_sent_reads_413)
{
    size_t body = 2u << 20;
    char head[128];
    snprintf(head, sizeof head,
             "POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", body);
    char *junk = malloc(body);
    memset(junk, 'x', body);
    int fd = httpc_connect(st.http_port);
    ck_assert_int_ge(fd, 0);
    ck_assert_uint_eq(httpc_send(fd, head, strlen(head), TIMEOUT_MS), strlen(head));
    size_t sent = httpc_send(fd, junk, body, TIMEOUT_MS);
    free(junk);
    ck_assert_msg(sent == body, "the body was cut off after %zu of %zu bytes", sent, body);
    httpc_response r = httpc_read(fd, TIMEOUT_MS);
    check_problem(&r, fd, 413, "/problems/too-large");
    httpc_free(&r);
    close(fd);
}
END_TEST

/* Sends one byte of text every 200 ms until an answer is there to read or 10 s pass. */
static httpc_response trickle(int fd, const char *text)
{
    long long end = now_ms() + 10000;
    size_t n = strlen(text);
    for (size_t i = 0; now_ms() < end; i = (i + 1) % n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) == 1)
            break;
        if (httpc_send(fd, text + i, 1, 1000) != 1)
            break;
    }
    return httpc_read(fd, TIMEOUT_MS);
}

/* Slow clients: a byte at a time keeps no connection past its deadline. */
static const struct {
    const char *start; /* sent at once */
    const char *drip;  /* then this, a byte at a time, over and over */
    int deadline_s;
} slow[] = {
    {"GET /healthz HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa", HEADER_TIMEOUT_S},
    {"POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{", " ", BODY_TIMEOUT_S},
};

/* The head (http.header_timeout_s) or the body (http.body_timeout_s) is cut off with 408. */
START_TEST(slow_client_gets_408)
{
    long long before = answers(408);
    int fd = httpc_connect(st.http_port);
    ck_assert_int_ge(fd, 0);
    size_t n = strlen(slow[_i].start);
    ck_assert_uint_eq(httpc_send(fd, slow[_i].start, n, TIMEOUT_MS), n);
    long long t0 = now_ms();
    httpc_response r = trickle(fd, slow[_i].drip);
    long long took = now_ms() - t0;
    check_problem(&r, fd, 408, "/problems/request-timeout");
    /* Not before the deadline (and the idle timeout, 30 s, could not have done it). */
    ck_assert_msg(took >= slow[_i].deadline_s * 1000 - 250, "408 after %lld ms", took);
    httpc_free(&r);
    close(fd);
    ck_assert_int_eq(answers_become(408, before + 1), before + 1);
}
END_TEST

/* Reads until the peer closes (bounded); the bytes, NUL-terminated; free() them. */
static char *read_all(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    long long end = now_ms() + TIMEOUT_MS;
    while (now_ms() < end && len + 1 < cap) {
        ssize_t got = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
        if (got > 0) {
            len += (size_t)got;
            continue;
        }
        if (got == 0 || (errno != EAGAIN && errno != EINTR))
            break;
        usleep(10000);
    }
    buf[len] = '\0';
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Keep-alive and pipelined requests are served as before, one answer each, in order. */
START_TEST(keep_alive_and_pipelining)
{
    int fd = httpc_connect(st.http_port);
    ck_assert_int_ge(fd, 0);
    const char *one = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < 3; i++) { /* one after the other on the same connection */
        ck_assert_uint_eq(httpc_send(fd, one, strlen(one), TIMEOUT_MS), strlen(one));
        httpc_response r = httpc_read(fd, TIMEOUT_MS);
        ck_assert_int_eq(r.status, 200);
        httpc_free(&r);
    }
    const char *three = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                        "POST /v1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                        /* a chunk extension, which evhttp alone would refuse */
                        "POST /v1/commands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                        "\r\n2;ext=1\r\n{}\r\n0\r\n\r\n"
                        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ck_assert_uint_eq(httpc_send(fd, three, strlen(three), TIMEOUT_MS), strlen(three));
    char *all = read_all(fd);
    close(fd);
    ck_assert_msg(count(all, "HTTP/1.1 200 ") == 2 && count(all, "HTTP/1.1 400 ") == 2,
                  "pipelined answers: %s", all);
    ck_assert_int_eq(count(all, "/problems/invalid-request"), 2);
    const char *first = strstr(all, "HTTP/1.1 200 "), *second = strstr(all, "HTTP/1.1 400 ");
    ck_assert_msg(first < second && strstr(second, "HTTP/1.1 200 "), "out of order: %s", all);
    free(all);
}
END_TEST

/* Trailer fields are read and dropped: a section the head's limit takes gets the request
   answered and the connection kept; a larger one gets 431, in problem+json. */
START_TEST(trailers_are_dropped_up_to_the_head_limit)
{
    size_t big = (size_t)12 * 1024; /* with the head, more than evhttp's header limit (16 KiB) */
    const char *head = "POST /v1/commands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       "X-Pad: ";
    const char *rest = "\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ";
    const char *next = "\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t len = strlen(head) + big / 2 + strlen(rest) + big + strlen(next);
    char *req = malloc(len + 1);
    char *w = req;
    w = stpcpy(w, head);
    memset(w, 'p', big / 2);
    w = stpcpy(w + big / 2, rest);
    memset(w, 't', big);
    stpcpy(w + big, next);
    int fd = httpc_connect(st.http_port);
    ck_assert_int_ge(fd, 0);
    ck_assert_uint_eq(httpc_send(fd, req, len, TIMEOUT_MS), len);
    char *all = read_all(fd);
    close(fd);
    ck_assert_msg(count(all, "HTTP/1.1 400 ") == 1 &&
                      count(all, "/problems/invalid-request") == 1 &&
                      strstr(strstr(all, "HTTP/1.1 400 "), "HTTP/1.1 200 "),
                  "answers: %.600s", all);
    free(all);

    /* The same trailer field, past the head limit. */
    w = stpcpy(req, "POST /v1/commands HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "2\r\n{}\r\n0\r\nX-Trailer: ");
    size_t over = len - (size_t)(w - req) - 4;
    memset(w, 't', over);
    memcpy(w + over, "\r\n\r\n", 5);
    refused("a trailer over the head limit", req, 431, "/problems/headers-too-large");
    free(req);
}
END_TEST

int main(void)
{
    char args[256];
    snprintf(args, sizeof args,
             "--http.header_timeout_s=%d --http.body_timeout_s=%d --http.max_body=%d",
             HEADER_TIMEOUT_S, BODY_TIMEOUT_S, MAX_BODY);
    setenv("GATEWAY_ARGS", args, 1);
    if (stack_start(&st, false) != 0) {
        stack_stop(&st);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("edge");
    TCase *tc = tcase_create("edge");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, refused_as_problem_json, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, huge_header_is_431);
    tcase_add_test(tc, over_size_body_still_sent_reads_413);
    tcase_add_loop_test(tc, slow_client_gets_408, 0, (int)(sizeof slow / sizeof slow[0]));
    tcase_add_test(tc, keep_alive_and_pipelining);
    tcase_add_test(tc, trailers_are_dropped_up_to_the_head_limit);
    suite_add_tcase(s, tc);
    int failed = check_run(s, CK_FORK_GETENV);
    if (failed || !stack_logs_clean(&st)) {
        stack_show_logs(&st);
        failed++;
    }
    int rc = stack_stop(&st);
    if (rc == 0 && !failed)
        stack_remove(&st);
    return failed == 0 && rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
