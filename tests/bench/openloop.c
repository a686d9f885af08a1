/*
 * openloop.c: an open-loop HTTP load generator for the sync latency benchmark. Requests are
 * due at fixed times (RATE per second for SECONDS), whatever the server's pace: a request that
 * finds no idle connection waits for one, and its latency counts from the moment it was due, not
 * from when it was sent, so a stalled server is not hidden by the client slowing down with it
 * (coordinated omission). Each request is a sync deposit (no Prefer) to one of ACCOUNTS accounts
 * bench-0..; with RATE 0 it sends as fast as the connections allow (closed loop) and reports the
 * rate reached.
 *
 * usage: openloop PORT RATE SECONDS CONNS ACCOUNTS
 * Prints one JSON object: rate asked and reached, counts by outcome, latency percentiles in ms.
 * With OPENLOOP_SERIES=FILE set it also writes one line per answer to FILE: when the request was
 * due (s from the start; the first line gives the start's wall-clock time), its latency and its
 * time from being sent (ms), and the HTTP status.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* After the last request is due, how long answers are waited for. */
#define DRAIN_S 30.0

typedef struct conn conn;

typedef struct load {
    struct event_base *base;
    struct sockaddr_in addr;
    double rate; /* per second; 0: closed loop */
    double seconds;
    int accounts;
    double start;      /* monotonic seconds */
    long long due;     /* requests due so far */
    long long planned; /* requests in the run */
    long long sent, ok, other, failed;
    double *lat; /* ms, one per answered request */
    long long nlat;
    conn **idle;
    int nidle;
    conn **all;         /* by index; NULL once broken and freed */
    long long *backlog; /* indexes of due requests waiting for a connection (a ring) */
    long long bhead, btail;
    struct event *tick;
    int open;
    bool stopped; /* closed loop: its time is up, no more requests */
    FILE *series; /* OPENLOOP_SERIES: one line per answer, or NULL */
} load;

struct conn {
    load *l;
    struct bufferevent *bev;
    int idx;         /* in load.all */
    long long req;   /* index of the request in flight; -1 when idle */
    double sent_at;  /* when it went out */
    size_t body_len; /* of the answer being read; 0 while its headers are read */
    int status;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double due_at(const load *l, long long i)
{
    return l->rate > 0 ? l->start + (double)i / l->rate : l->start;
}

static void send_request(conn *c, long long i)
{
    char body[128], head[512];
    int blen = snprintf(body, sizeof(body),
                        "{\"type\":\"account.deposit\",\"aggregate_id\":\"bench-%lld\","
                        "\"payload\":{\"amount\":1}}",
                        i % c->l->accounts);
    int hlen = snprintf(head, sizeof(head),
                        "POST /v1/commands HTTP/1.1\r\nHost: bench\r\n"
                        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                        blen);
    c->req = i;
    c->sent_at = now_s();
    c->body_len = 0;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add(out, head, (size_t)hlen);
    evbuffer_add(out, body, (size_t)blen);
    c->l->sent++;
}

static void finished(load *l)
{
    if (l->ok + l->other + l->failed == l->planned)
        event_base_loopbreak(l->base);
}

/* Gives an idle connection the oldest due request, or parks it. */
static void next_request(conn *c)
{
    load *l = c->l;
    c->req = -1;
    if (l->bhead < l->btail) {
        send_request(c, l->backlog[l->bhead++ % l->planned]);
        return;
    }
    if (l->rate <= 0 && l->start > 0 && !l->stopped && l->due < l->planned) {
        send_request(c, l->due++);
        return;
    }
    l->idle[l->nidle++] = c;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    load *l = c->l;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        if (c->body_len == 0) {
            struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            if (end.pos < 0)
                return;
            size_t hl = (size_t)end.pos + 4;
            char *h = malloc(hl + 1);
            evbuffer_remove(in, h, hl);
            h[hl] = '\0';
            c->status = 0;
            sscanf(h, "HTTP/1.%*d %d", &c->status);
            const char *cl = strcasestr(h, "\r\nContent-Length:");
            c->body_len = (cl ? strtoul(cl + 17, NULL, 10) : 0) + 1; /* +1: headers done */
            free(h);
        }
        if (evbuffer_get_length(in) < c->body_len - 1)
            return;
        evbuffer_drain(in, c->body_len - 1);
        /* Open loop: from when it was due; closed loop: from when it went out. */
        double from = l->rate > 0 ? due_at(l, c->req) : c->sent_at;
        double ms = (now_s() - from) * 1000.0;
        if (c->status == 200 || c->status == 201)
            l->ok++, l->lat[l->nlat++] = ms;
        else
            l->other++;
        if (l->series)
            fprintf(l->series, "%.4f %.3f %.3f %d\n", from - l->start, ms,
                    (now_s() - c->sent_at) * 1000.0, c->status);
        next_request(c);
        finished(l);
        if (c->req < 0)
            return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        next_request(c); /* idle until the clock starts */
        return;
    }
    /* A broken connection fails its request; the run goes on with the others. */
    if (c->req >= 0)
        c->l->failed++;
    c->l->open--;
    c->l->all[c->idx] = NULL;
    bufferevent_free(bev);
    finished(c->l);
    if (c->l->open == 0)
        event_base_loopbreak(c->l->base);
    free(c);
}

/* Every millisecond: what fell due goes out on an idle connection, or waits for one. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    load *l = arg;
    double t = now_s();
    if (t > l->start + l->seconds + DRAIN_S) { /* what is still unanswered stays so */
        event_base_loopbreak(l->base);
        return;
    }
    if (l->rate > 0) {
        while (l->due < l->planned && due_at(l, l->due) <= t) {
            long long i = l->due++;
            if (l->nidle > 0)
                send_request(l->idle[--l->nidle], i);
            else
                l->backlog[l->btail++ % l->planned] = i;
        }
    } else if (t < l->start + l->seconds) {
        while (l->nidle > 0 && l->due < l->planned)
            send_request(l->idle[--l->nidle], l->due++);
    } else if (!l->stopped) {
        l->stopped = true;
        l->planned = l->due;
        finished(l);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const load *l, double p)
{
    if (l->nlat == 0)
        return 0;
    long long k = (long long)(p / 100.0 * (double)(l->nlat - 1) + 0.5);
    return l->lat[k];
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: openloop PORT RATE SECONDS CONNS ACCOUNTS\n");
        return 2;
    }
    load l = {0};
    l.rate = atof(argv[2]);
    l.seconds = atof(argv[3]);
    int conns = atoi(argv[4]);
    l.accounts = atoi(argv[5]);
    if (conns < 1 || l.seconds <= 0 || l.accounts < 1) {
        fprintf(stderr, "openloop: bad arguments\n");
        return 2;
    }
    /* Closed loop: bounded by what 200k requests per second could send. */
    l.planned = (long long)((l.rate > 0 ? l.rate : 200000) * l.seconds);
    if (l.planned < 1)
        l.planned = 1;
    l.lat = malloc((size_t)l.planned * sizeof(double));
    l.backlog = malloc((size_t)l.planned * sizeof(long long));
    l.idle = malloc((size_t)conns * sizeof(conn *));
    l.all = calloc((size_t)conns, sizeof(conn *));
    l.base = event_base_new();
    l.addr.sin_family = AF_INET;
    l.addr.sin_port = htons((uint16_t)atoi(argv[1]));
    inet_pton(AF_INET, "127.0.0.1", &l.addr.sin_addr);
    for (int i = 0; i < conns; i++) {
        conn *c = l.all[i] = calloc(1, sizeof(*c));
        c->l = &l;
        c->idx = i;
        c->req = -1;
        c->bev = bufferevent_socket_new(l.base, -1, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&l.addr, sizeof(l.addr)) != 0) {
            fprintf(stderr, "openloop: connect: %s\n", strerror(errno));
            return 1;
        }
        l.open++;
    }
    /* Let the connections complete (for up to 10 s), then start the clock. */
    for (int waited = 0; waited < 100 && l.nidle < l.open; waited++) {
        struct timeval settle = {0, 100000};
        event_base_loopexit(l.base, &settle);
        event_base_dispatch(l.base);
    }
    if (l.nidle != l.open) {
        fprintf(stderr, "openloop: %d of %d connections up\n", l.nidle, l.open);
        return 1;
    }
    l.start = now_s();
    const char *series = getenv("OPENLOOP_SERIES");
    if (series && *series) {
        if (!(l.series = fopen(series, "w"))) {
            perror(series);
            return 1;
        }
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        fprintf(l.series, "# start %lld.%06ld due_s latency_ms from_sent_ms status\n",
                (long long)wall.tv_sec, wall.tv_nsec / 1000);
    }
    l.tick = event_new(l.base, -1, EV_PERSIST, on_tick, &l);
    struct timeval ms = {0, 1000};
    event_add(l.tick, &ms);
    event_base_dispatch(l.base);
    double took = now_s() - l.start;
    qsort(l.lat, (size_t)l.nlat, sizeof(double), cmp_double);
    printf("{\"rate\": %.0f, \"reached\": %.1f, \"seconds\": %.2f, \"planned\": %lld, \"sent\": "
           "%lld, \"ok\": %lld, \"other\": %lld, \"failed\": %lld, \"unanswered\": %lld, "
           "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f}\n",
           l.rate, (double)l.ok / took, took, l.planned, l.sent, l.ok, l.other, l.failed,
           l.planned - l.ok - l.other - l.failed, pct(&l, 50), pct(&l, 99), pct(&l, 99.9),
           l.nlat ? l.lat[l.nlat - 1] : 0.0);
    for (int i = 0; i < conns; i++) {
        if (l.all[i]) {
            bufferevent_free(l.all[i]->bev);
            free(l.all[i]);
        }
    }
    if (l.series && fclose(l.series) != 0)
        perror("openloop: series");
    event_free(l.tick);
    event_base_free(l.base);
    free(l.all);
    free(l.lat);
    free(l.backlog);
    free(l.idle);
    return 0;
}
