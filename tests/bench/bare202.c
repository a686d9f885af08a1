/*
 * bare202.c: the baseline of the gateway benchmark. One libevent loop, one thread, evhttp with
 * the gateway's limits; every request's body is read and answered 202 with a JSON body the size
 * of the gateway's. It does what an HTTP front end cannot avoid and nothing else: no parsing,
 * no validation, no PostgreSQL, no Kafka.
 *
 * usage: bare202 PORT
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The gateway's 202 to an optimistic command, with its fields. */
static const char answer[] =
    "{\"command_id\":\"00000000-0000-4000-8000-000000000000\",\"status\":\"accepted\","
    "\"aggregate_type\":\"account\",\"aggregate_id\":\"bench-0000\","
    "\"idempotency_key\":\"00000000-0000-4000-8000-000000000000\"}\n";

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char *body = malloc(n + 1); /* the gateway copies the body out once too */
    if (body) {
        evbuffer_remove(in, body, n);
        free(body);
    }
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_add_header(out, "Location", "/v1/commands/00000000-0000-4000-8000-000000000000");
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, answer, sizeof(answer) - 1);
    evhttp_send_reply(req, 202, "Accepted", buf);
    evbuffer_free(buf);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bare202 PORT\n");
        return 2;
    }
    int port = atoi(argv[1]);
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_max_body_size(http, 1048576);
    evhttp_set_max_headers_size(http, 16384);
    evhttp_set_timeout(http, 30);
    evhttp_set_gencb(http, on_request, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)port) != 0) {
        fprintf(stderr, "bare202: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    struct event *term = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *intr = evsignal_new(base, SIGINT, on_signal, base);
    event_add(term, NULL);
    event_add(intr, NULL);
    event_base_dispatch(base);
    event_free(term);
    event_free(intr);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
