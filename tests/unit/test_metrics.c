/* test_metrics: the Prometheus registry: counters, gauges and histograms render in the text format with their
 * HELP/TYPE lines, undeclared families are refused, and concurrent updates from several threads are not lost.
 * test_escape pins issue 17, finding 10: a step name with '"' and a newline injected lines into /metrics; label
 * values from outside go through metrics_escape (\\, \", \n; invalid UTF-8 as U+FFFD; cut at a character). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static void test_render(void **state)
{
    (void)state;
    metrics_reset();
    metrics_declare("t_events_total", METRIC_COUNTER, "Events.");
    metrics_declare("t_inflight", METRIC_GAUGE, "In flight.");
    metrics_declare("t_latency_seconds", METRIC_HISTOGRAM, "Latency.");
    metrics_add("t_events_total", "source=\"pubsub\",outcome=\"recorded\"", 2);
    metrics_add("t_events_total", "source=\"pubsub\",outcome=\"recorded\"", 1);
    metrics_set("t_inflight", "", 7);
    metrics_observe("t_latency_seconds", "route=\"x\"", 0.003);
    metrics_observe("t_latency_seconds", "route=\"x\"", 20);
    metrics_add("t_undeclared_total", "", 1);
    char *text = metrics_render(NULL);
    assert_non_null(strstr(text, "# HELP t_events_total Events.\n# TYPE t_events_total counter\n"));
    assert_non_null(strstr(text, "t_events_total{source=\"pubsub\",outcome=\"recorded\"} 3\n"));
    assert_non_null(strstr(text, "t_inflight 7\n"));
    assert_non_null(strstr(text, "# TYPE t_latency_seconds histogram\n"));
    assert_non_null(strstr(text, "t_latency_seconds_bucket{route=\"x\",le=\"0.0025\"} 0\n"));
    assert_non_null(strstr(text, "t_latency_seconds_bucket{route=\"x\",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(text, "t_latency_seconds_bucket{route=\"x\",le=\"10\"} 1\n"));
    assert_non_null(strstr(text, "t_latency_seconds_bucket{route=\"x\",le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text, "t_latency_seconds_count{route=\"x\"} 2\n"));
    assert_null(strstr(text, "t_undeclared_total"));
    free(text);
    assert_true(metrics_get("t_events_total", "source=\"pubsub\",outcome=\"recorded\"") == 3);
    metrics_reset();
}

static void test_escape(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(metrics_escape("plain-name_1", out, sizeof out), "plain-name_1");
    assert_string_equal(metrics_escape("a\"b\\c\nd", out, sizeof out), "a\\\"b\\\\c\\nd");
    assert_string_equal(metrics_escape("caf\xc3\xa9 \xff", out, sizeof out), "caf\xc3\xa9 \xef\xbf\xbd");
    assert_string_equal(metrics_escape(NULL, out, sizeof out), "");
    /* cut before an escape or a character that would not fit, never inside one */
    assert_string_equal(metrics_escape("ab\"", out, 4), "ab");
    assert_string_equal(metrics_escape("a\xc3\xa9", out, 3), "a");
    /* the injection of the report: a step name that closes the label set and starts a series of its own */
    metrics_reset();
    metrics_declare("t_launches_total", METRIC_COUNTER, "Launches.");
    char labels[200], step[100];
    snprintf(labels, sizeof labels, "step=\"%s\"", metrics_escape("A\"} 1\nsluice_injected_total 99\n#", step, sizeof step));
    metrics_add("t_launches_total", labels, 1);
    char *text = metrics_render(NULL);
    assert_non_null(strstr(text, "t_launches_total{step=\"A\\\"} 1\\nsluice_injected_total 99\\n#\"} 1\n"));
    for (char *line = text; *line; line = strchr(line, '\n') + 1) assert_true(strncmp(line, "sluice_injected", 15) != 0);
    free(text);
    metrics_reset();
}

static void *adder(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) metrics_add("t_c_total", (i & 1) ? "k=\"a\"" : "k=\"b\"", 1);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    metrics_declare("t_c_total", METRIC_COUNTER, "C.");
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, adder, NULL);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_true(metrics_get("t_c_total", "k=\"a\"") == 20000);
    assert_true(metrics_get("t_c_total", "k=\"b\"") == 20000);
    metrics_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_render), cmocka_unit_test(test_escape),
                                       cmocka_unit_test(test_threads)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
