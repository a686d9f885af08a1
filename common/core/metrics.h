/* metrics.h: counters and histograms rendered in the Prometheus text exposition format. */
#ifndef CQRS_METRICS_H
#define CQRS_METRICS_H

#include <stddef.h>

typedef struct metrics metrics;
typedef struct metrics_counter metrics_counter;
typedef struct metrics_histogram metrics_histogram;
typedef struct metrics_gauge metrics_gauge;

/* Creates an empty registry; caller frees with metrics_free(). */
metrics *metrics_new(void);
void metrics_free(metrics *m);

/*
 * Registers (or finds) the counter name{labels}; labels is the text between the braces, e.g.
 * "status=\"200\"", or NULL. The counter lives as long as the registry. Registering takes a
 * lock; keep the pointer rather than looking it up on a hot path. Safe from any thread, as is
 * everything here.
 */
metrics_counter *metrics_counter_get(metrics *m, const char *name, const char *help,
                                     const char *labels);
/* Adds n to a counter. */
void metrics_add(metrics_counter *c, unsigned long long n);
/* Current value of a counter (for tests and health reports). */
unsigned long long metrics_value(const metrics_counter *c);

/* Registers (or finds) the gauge name{labels}, a value that goes up and down. */
metrics_gauge *metrics_gauge_get(metrics *m, const char *name, const char *help,
                                 const char *labels);
/* Adds delta (may be negative) to a gauge. */
void metrics_gauge_add(metrics_gauge *g, long long delta);
/* Current value of a gauge. */
long long metrics_gauge_value(const metrics_gauge *g);

/* Registers a histogram with upper bounds in seconds, ascending (copied). */
metrics_histogram *metrics_histogram_get(metrics *m, const char *name, const char *help,
                                         const double *bounds, size_t nbounds);
/* Records one observation given in microseconds. */
void metrics_observe_us(metrics_histogram *h, long long us);

/* Renders every metric; caller frees the string with free(). */
char *metrics_render(metrics *m);

#endif
