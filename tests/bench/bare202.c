/*
 * bare202.c: the baselines of the gateway benchmark. One libevent loop, one thread, evhttp with
 * the gateway's limits; every request's body is read and answered 202 with a JSON body the size
 * of the gateway's. It does what an HTTP front end cannot avoid and nothing else: no parsing,
 * no validation, no PostgreSQL, no Kafka.
 *
 * With BOOTSTRAP and TOPIC it also does the one thing the gateway's optimistic path must do
 * besides HTTP: each body is produced to TOPIC, with the headers of a command's envelope and a
 * key of the gateway's kind, through the project's kafka module (the gateway's producer
 * settings), and answered 202 from its delivery report, as the gateway answers. The difference
 * between the two modes is what handing a request to Kafka costs on this machine.
 *
 * usage: bare202 PORT [BOOTSTRAP TOPIC]
 */
#include "core/config.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "domain/envelope.h"
#include "kafka/kafka.h"

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

static void reply_202(struct evhttp_request *req)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_add_header(out, "Location", "/v1/commands/00000000-0000-4000-8000-000000000000");
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, answer, sizeof(answer) - 1);
    evhttp_send_reply(req, 202, "Accepted", buf);
    evbuffer_free(buf);
}

/* The gateway copies the body out once too. */
static char *take_body(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(in);
    char *body = malloc(*len + 1);
    if (body)
        evbuffer_remove(in, body, *len);
    return body;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    size_t n;
    free(take_body(req, &n));
    reply_202(req);
}

/* --- with Kafka ------------------------------------------------------------------------------ */

typedef struct {
    kafka_producer *producer;
    const char *topic;
    unsigned long long n;
} kafka_mode;

/* A request waiting for its delivery report; req is NULL once its client is gone. */
typedef struct {
    struct evhttp_request *req;
    struct evhttp_connection *conn;
} held;

/* evhttp frees a request whose connection closes while it is held. */
static void on_close(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    held *h = arg;
    h->req = NULL;
    h->conn = NULL;
}

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)arg;
    held *h = opaque;
    if (h->req) {
        evhttp_connection_set_closecb(h->conn, NULL, NULL);
        if (d->err)
            evhttp_send_error(h->req, 503, d->errstr);
        else
            reply_202(h->req);
    }
    free(h);
}

static void on_request_kafka(struct evhttp_request *req, void *arg)
{
    kafka_mode *k = arg;
    size_t len;
    char *body = take_body(req, &len);
    char key[32], id[] = "00000000-0000-4000-8000-000000000000";
    snprintf(key, sizeof(key), "bench-%llu", k->n++ % 1000); /* post.lua's 1000 accounts */
    /* A deposit's envelope, its attributes the sizes of the gateway's. */
    envelope e = {
        .id = id,
        .source = "/command-gateway",
        .type = "account.deposit",
        .subject = key,
        .time = "2026-01-01T00:00:00.000000Z",
        .tenant = "default",
        .idempotency_key = id,
        .traceparent = "00-00000000000000000000000000000000-0000000000000000-01",
        .request_hash = id,
        .expected_version = -1,
        .reply_partition = -1,
    };
    header hdrs[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, hdrs, scratch);
    held *h = xcalloc(1, sizeof(*h));
    h->req = req;
    h->conn = evhttp_request_get_connection(req);
    if (body && kafka_produce(k->producer, k->topic, -1, key, strlen(key), body, len, hdrs, nh,
                              h) == KAFKA_OK) {
        evhttp_connection_set_closecb(h->conn, on_close, h);
    } else {
        free(h);
        evhttp_send_error(req, 503, "not produced");
    }
    free(body);
}

static void start_kafka(struct event_base *base, const char *bootstrap, const char *topic,
                        kafka_mode *k)
{
    char err[512];
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", bootstrap);
    kafka_producer *p = kafka_producer_new(base, &props, on_delivery, k, err, sizeof(err));
    config_props_free(&props);
    /* The gateway's topics have 4 partitions (topics.partitions). */
    if (!p || kafka_ensure_topics(p, &topic, 1, 4, -1, 10000, err, sizeof(err)) != 0) {
        fprintf(stderr, "bare202: %s\n", err);
        exit(1);
    }
    k->producer = p;
    k->topic = topic;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: bare202 PORT [BOOTSTRAP TOPIC]\n");
        return 2;
    }
    log_init("bare202", LOG_WARN);
    int port = atoi(argv[1]);
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_max_body_size(http, 1048576);
    evhttp_set_max_headers_size(http, 16384);
    evhttp_set_timeout(http, 30);
    kafka_mode k = {0};
    if (argc == 4) {
        start_kafka(base, argv[2], argv[3], &k);
        evhttp_set_gencb(http, on_request_kafka, &k);
    } else {
        evhttp_set_gencb(http, on_request, NULL);
    }
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
    if (k.producer) { /* the deliveries still due answer their requests, or fail them */
        kafka_producer_flush(k.producer, 10000);
        kafka_producer_free(k.producer);
    }
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
