/* metrics: process-wide Prometheus counters, gauges and histograms, and their text exposition.
 * Uses: libc, pthreads. Must not: know what is counted (callers name series) or do I/O.
 * Thread-safe: every function may be called from any thread (one mutex; updates are a hash look-up). */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H
#include <stddef.h>

typedef enum { METRIC_COUNTER = 0, METRIC_GAUGE, METRIC_HISTOGRAM } metric_type;

/* Declares a family (name, type, help; all static strings). Series of undeclared families are refused. */
void metrics_declare(const char *name, metric_type type, const char *help);
/* `labels` is the inside of the braces, already escaped, e.g. "source=\"pubsub\",outcome=\"recorded\"", or
 * "" for none; copied on first use. */
void metrics_add(const char *name, const char *labels, double v);
void metrics_set(const char *name, const char *labels, double v);
/* Histogram observation in seconds (fixed buckets from 0.5 ms to 10 s). */
void metrics_observe(const char *name, const char *labels, double seconds);
/* The current value of a counter or gauge series, 0 if absent (tests). */
double metrics_get(const char *name, const char *labels);
/* The Prometheus text format of every series; caller frees. NULL on allocation failure. */
char *metrics_render(size_t *len);
/* Drops every series and family (tests, end of serve). */
void metrics_reset(void);

#endif
