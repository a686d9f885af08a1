/* health.c: /healthz (the process runs), /readyz (it can work), /metrics (Prometheus text). */
#include "loop/health.h"

#include "http/httpd.h"
#include "core/xalloc.h"

#include <stdlib.h>
#include <string.h>

struct health {
    httpd *http;
    metrics *m;
    health_ready_fn ready;
    void *arg;
};

static void reply_text(http_req *req, int status, const char *text)
{
    http_req_reply(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void route(http_req *req, void *arg)
{
    health *h = arg;
    const char *path = http_req_path(req);
    if (http_req_method(req) != HTTP_GET && http_req_method(req) != HTTP_HEAD) {
        http_req_set_header(req, "Allow", "GET, HEAD");
        reply_text(req, 405, "method not allowed\n");
    } else if (strcmp(path, "/healthz") == 0) {
        reply_text(req, 200, "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        bool ok = h->ready(h->arg);
        reply_text(req, ok ? 200 : 503, ok ? "ready\n" : "not ready\n");
    } else if (strcmp(path, "/metrics") == 0) {
        char *text = metrics_render(h->m);
        http_req_reply(req, 200, "text/plain; version=0.0.4", text, strlen(text));
        free(text);
    } else {
        reply_text(req, 404, "not found\n");
    }
}

health *health_new(struct event_base *base, const char *host, int port, metrics *m,
                   health_ready_fn ready, void *arg, char *err, size_t errlen)
{
    health *h = xcalloc(1, sizeof(*h));
    h->m = m;
    h->ready = ready;
    h->arg = arg;
    /* Probes and scrapers send no bodies; small limits keep a stray client cheap. */
    /* Probes and scrapes only: a few connections at a time. */
    httpd_options lim = {
        .max_body = 1024, .max_headers_size = 8192, .timeout_s = 10, .max_connections = 64};
    h->http = httpd_new(base, host, port, &lim, route, h, err, errlen);
    if (!h->http) {
        free(h);
        return NULL;
    }
    return h;
}

int health_port(const health *h)
{
    return httpd_port(h->http);
}

void health_free(health *h)
{
    if (!h)
        return;
    httpd_free(h->http);
    free(h);
}
