/* metrics.c: a small Prometheus registry with atomic counters. */
#include "core/metrics.h"

#include "core/xalloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A gauge is a counter that renders as signed and is typed gauge; the handle is cast. */
struct metrics_counter {
    char *name, *help, *labels;
    bool gauge;
    atomic_ullong value; /* a gauge's value in two's complement */
    struct metrics_counter *next;
};

struct metrics_histogram {
    char *name, *help;
    double *bounds;
    size_t nbounds;
    atomic_ullong *buckets; /* nbounds + 1, the last is +Inf; not cumulative */
    atomic_ullong count;
    atomic_ullong sum_us;
    struct metrics_histogram *next;
};

struct metrics {
    pthread_mutex_t lock; /* registration and rendering; values are atomics */
    metrics_counter *counters;
    metrics_histogram *histograms;
};

metrics *metrics_new(void)
{
    metrics *m = xcalloc(1, sizeof(metrics));
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    for (metrics_counter *c = m->counters, *n; c; c = n) {
        n = c->next;
        free(c->name), free(c->help), free(c->labels), free(c);
    }
    for (metrics_histogram *h = m->histograms, *n; h; h = n) {
        n = h->next;
        free(h->name), free(h->help), free(h->bounds), free(h->buckets), free(h);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static metrics_counter *series_get(metrics *m, const char *name, const char *help,
                                   const char *labels, bool gauge)
{
    const char *l = labels ? labels : "";
    pthread_mutex_lock(&m->lock);
    /* Insert after the last series of the same name (else at the end): one family, one block. */
    metrics_counter **tail = &m->counters, **after_family = NULL;
    for (metrics_counter *c = m->counters; c; c = c->next) {
        if (strcmp(c->name, name) == 0) {
            if (strcmp(c->labels, l) == 0) {
                pthread_mutex_unlock(&m->lock);
                return c;
            }
            after_family = &c->next;
        }
        tail = &c->next;
    }
    if (after_family)
        tail = after_family;
    metrics_counter *c = xcalloc(1, sizeof(*c));
    c->name = xstrdup(name);
    c->help = xstrdup(help);
    c->labels = xstrdup(l);
    c->gauge = gauge;
    atomic_init(&c->value, 0);
    c->next = *tail;
    *tail = c;
    pthread_mutex_unlock(&m->lock);
    return c;
}

metrics_counter *metrics_counter_get(metrics *m, const char *name, const char *help,
                                     const char *labels)
{
    return series_get(m, name, help, labels, false);
}

metrics_gauge *metrics_gauge_get(metrics *m, const char *name, const char *help, const char *labels)
{
    return (metrics_gauge *)series_get(m, name, help, labels, true);
}

void metrics_gauge_add(metrics_gauge *g, long long delta)
{
    atomic_fetch_add_explicit(&((metrics_counter *)g)->value, (unsigned long long)delta,
                              memory_order_relaxed);
}

long long metrics_gauge_value(const metrics_gauge *g)
{
    return (long long)atomic_load_explicit(&((const metrics_counter *)g)->value,
                                           memory_order_relaxed);
}

void metrics_add(metrics_counter *c, unsigned long long n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

unsigned long long metrics_value(const metrics_counter *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

metrics_histogram *metrics_histogram_get(metrics *m, const char *name, const char *help,
                                         const double *bounds, size_t nbounds)
{
    pthread_mutex_lock(&m->lock);
    for (metrics_histogram *h = m->histograms; h; h = h->next) {
        if (strcmp(h->name, name) == 0) {
            pthread_mutex_unlock(&m->lock);
            return h;
        }
    }
    metrics_histogram *h = xcalloc(1, sizeof(*h));
    h->name = xstrdup(name);
    h->help = xstrdup(help);
    h->bounds = xmalloc(nbounds * sizeof(double));
    memcpy(h->bounds, bounds, nbounds * sizeof(double));
    h->nbounds = nbounds;
    h->buckets = xcalloc(nbounds + 1, sizeof(*h->buckets));
    h->next = m->histograms;
    m->histograms = h;
    pthread_mutex_unlock(&m->lock);
    return h;
}

void metrics_observe_us(metrics_histogram *h, long long us)
{
    double s = (double)us / 1e6;
    size_t i = 0;
    while (i < h->nbounds && s > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (unsigned long long)(us < 0 ? 0 : us),
                              memory_order_relaxed);
}

char *metrics_render(metrics *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    pthread_mutex_lock(&m->lock);
    const char *last = "";
    for (const metrics_counter *c = m->counters; c; c = c->next) {
        if (strcmp(last, c->name) != 0)
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", c->name, c->help, c->name,
                    c->gauge ? "gauge" : "counter");
        last = c->name;
        if (c->gauge)
            fprintf(f, *c->labels ? "%s{%s} %lld\n" : "%s%s %lld\n", c->name, c->labels,
                    metrics_gauge_value((const metrics_gauge *)c));
        else
            fprintf(f, *c->labels ? "%s{%s} %llu\n" : "%s%s %llu\n", c->name, c->labels,
                    metrics_value(c));
    }
    for (const metrics_histogram *h = m->histograms; h; h = h->next) {
        fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
        unsigned long long cum = 0;
        for (size_t i = 0; i <= h->nbounds; i++) {
            cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
            if (i < h->nbounds)
                fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", h->name, h->bounds[i], cum);
            else
                fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", h->name, cum);
        }
        fprintf(f, "%s_sum %.6f\n%s_count %llu\n", h->name,
                (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6, h->name,
                (unsigned long long)atomic_load_explicit(&h->count, memory_order_relaxed));
    }
    pthread_mutex_unlock(&m->lock);
    fclose(f);
    return buf;
}
