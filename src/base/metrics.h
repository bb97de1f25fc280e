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
 * "" for none; copied on first use. A value that comes from outside (a workflow or step name) goes through
 * metrics_escape first. */
void metrics_add(const char *name, const char *labels, double v);
void metrics_set(const char *name, const char *labels, double v);
/* `value` as the inside of a label value's quotes in the Prometheus text format: backslash, double quote and
 * newline escaped (\\, \", \n), bytes that are not UTF-8 as U+FFFD. Cut at a character, never inside an
 * escape, to fit `size` (> 0). Returns out. */
char *metrics_escape(const char *value, char *out, size_t size);
/* Histogram observation in seconds (fixed buckets from 0.5 ms to 10 s). */
void metrics_observe(const char *name, const char *labels, double seconds);
/* The current value of a counter or gauge series, 0 if absent (tests). */
double metrics_get(const char *name, const char *labels);
/* The Prometheus text format of every series; caller frees. */
char *metrics_render(size_t *len);
/* Drops every series and family (tests, end of serve). */
void metrics_reset(void);

#endif
