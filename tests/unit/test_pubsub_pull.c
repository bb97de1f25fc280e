/* pubsub_pull (issue 19, Pub/Sub pull ingress): the parts without a network — subscription names, the endpoint
 * as Google's clients choose it (PUBSUB_EMULATOR_HOST wins: plain HTTP, no credentials), and what a pulled
 * message becomes for ingress: a log sink's message the wrapped push body (deliveryAttempt kept), a CloudEvents-
 * bound message the event itself with its attributes as headers, so both decode exactly as their pushes do.
 * The pulling, acknowledging and redelivery are checked against Google's emulator (test_pubsub_emulator.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "jwt.h"
#include "log.h"
#include "pubsub_pull.h"

static const char LOGENTRY[] =
    "{\"textPayload\":\"Worker pool stopped.\",\"insertId\":\"abc12345\",\"resource\":{\"type\":\"dataflow_step\","
    "\"labels\":{\"job_id\":\"2026-01-02_03_04_05-111\",\"step_id\":\"\",\"job_name\":\"my-job-1--r1-1\","
    "\"project_id\":\"123456789012\",\"region\":\"europe-west4\"}},\"timestamp\":\"2026-01-02T03:14:00.5Z\","
    "\"severity\":\"INFO\",\"logName\":\"projects/p/logs/dataflow.googleapis.com%2Fjob-message\"}";

static json_t *received(const char *data_text, json_t *attributes, int delivery_attempt)
{
    char *b64 = jwt_b64_encode((const unsigned char *)data_text, strlen(data_text));
    json_t *rm = json_pack("{s:s,s:{s:s,s:s,s:s}}", "ackId", "ack-1", "message", "data", b64, "messageId", "42",
                           "publishTime", "2026-01-02T03:14:01Z");
    free(b64);
    if (attributes) json_object_set_new(json_object_get(rm, "message"), "attributes", attributes);
    if (delivery_attempt) json_object_set_new(rm, "deliveryAttempt", json_integer(delivery_attempt));
    return rm;
}

static void test_names(void **s)
{
    (void)s;
    assert_true(pubsub_pull_valid_name("projects/my-project/subscriptions/sluice-events"));
    assert_true(pubsub_pull_valid_name("projects/p1/subscriptions/a.b_c~d+e%20"));
    assert_false(pubsub_pull_valid_name(NULL));
    assert_false(pubsub_pull_valid_name("sluice-events"));
    assert_false(pubsub_pull_valid_name("projects/p/topics/t"));
    assert_false(pubsub_pull_valid_name("projects//subscriptions/s"));
    assert_false(pubsub_pull_valid_name("projects/p/subscriptions/"));
    assert_false(pubsub_pull_valid_name("projects/p/subscriptions/s/x"));
    assert_false(pubsub_pull_valid_name("projects/p/subscriptions/s?x=1"));
    assert_false(pubsub_pull_valid_name("projects/p/subscriptions/s t"));
    /* and pubsub_pull_new refuses one */
    const char *subs[] = {"projects/p/subscriptions/ok", "nope"};
    char *err = NULL;
    pubsub_pull_options o = {.ing = (ingress *)1, .subscriptions = subs, .n_subscriptions = 2, .no_auth = 1};
    assert_null(pubsub_pull_new(&o, &err));
    assert_non_null(strstr(err, "'nope' is not a subscription name"));
    free(err);
}

static void test_endpoint(void **s)
{
    (void)s;
    int no_auth = -1;
    char *u = pubsub_pull_endpoint(NULL, NULL, &no_auth);
    assert_string_equal(u, "https://pubsub.googleapis.com");
    assert_int_equal(no_auth, 0);
    free(u);
    u = pubsub_pull_endpoint("https://pubsub.example/", "", &no_auth);
    assert_string_equal(u, "https://pubsub.example");
    assert_int_equal(no_auth, 0);
    free(u);
    u = pubsub_pull_endpoint("https://pubsub.example", "127.0.0.1:8085", &no_auth);
    assert_string_equal(u, "http://127.0.0.1:8085");
    assert_int_equal(no_auth, 1);
    free(u);
}

/* A log sink's message: the body is the push a subscription would have sent, and decodes as one. */
static void test_logsink_message(void **s)
{
    (void)s;
    json_t *rm = received(LOGENTRY, json_pack("{s:s}", "logging.googleapis.com/timestamp", "2026-01-02T03:14:00.5Z"), 3);
    char *body = NULL, err[200] = "";
    size_t len = 0, nh = 99;
    ev_header hdrs[8];
    assert_int_equal(pubsub_pull_to_event(rm, "projects/p/subscriptions/s", &body, &len, hdrs, 8, &nh, err, sizeof err), 0);
    assert_int_equal(nh, 0);
    ev_job_event ev;
    assert_int_equal(ev_decode(hdrs, nh, body, len, &ev, err, sizeof err), EV_OK);
    assert_string_equal(ev.source, "pubsub");
    assert_string_equal(ev.job_name, "my-job-1--r1-1");
    assert_string_equal(ev.job_id, "2026-01-02_03_04_05-111");
    assert_string_equal(ev.message_id, "42");
    assert_null(ev.state); /* "it ended": the engine confirms the state */
    assert_int_equal(ev.delivery_attempt, 3);
    ev_job_event_free(&ev);
    free(body);
    json_decref(rm);
}

/* Eventarc's Dataflow event carried with the CloudEvents Pub/Sub binding: ce-* attributes, data = the event. */
static void test_cloudevent_message(void **s)
{
    (void)s;
    const char *data = "{\"@type\":\"type.googleapis.com/google.events.cloud.dataflow.v1beta3.JobEventData\","
                       "\"payload\":{\"id\":\"2026-01-02_03_04_05-222\",\"name\":\"my-job-2--r1-1\","
                       "\"projectId\":\"p\",\"location\":\"europe-west4\",\"currentState\":\"JOB_STATE_DONE\"}}";
    json_t *attrs = json_pack("{s:s,s:s,s:s,s:s,s:s}", "ce-id", "e-1", "ce-source",
                              "//dataflow.googleapis.com/projects/p/locations/europe-west4", "ce-specversion", "1.0",
                              "ce-type", "google.cloud.dataflow.job.v1beta3.statusChanged", "content-type",
                              "application/json");
    json_t *rm = received(data, attrs, 0);
    char *body = NULL, err[200] = "";
    size_t len = 0, nh = 0;
    ev_header hdrs[8];
    assert_int_equal(pubsub_pull_to_event(rm, "projects/p/subscriptions/s", &body, &len, hdrs, 8, &nh, err, sizeof err), 0);
    assert_int_equal(nh, 5);
    assert_int_equal(len, strlen(data));
    ev_job_event ev;
    assert_int_equal(ev_decode(hdrs, nh, body, len, &ev, err, sizeof err), EV_OK);
    assert_string_equal(ev.source, "eventarc-dataflow");
    assert_string_equal(ev.job_name, "my-job-2--r1-1");
    assert_string_equal(ev.state, "JOB_STATE_DONE");
    assert_string_equal(ev.message_id, "//dataflow.googleapis.com/projects/p/locations/europe-west4/e-1");
    ev_job_event_free(&ev);
    free(body);
    json_decref(rm);
}

/* What cannot be made into an event is said so, not guessed at. */
static void test_bad_messages(void **s)
{
    (void)s;
    char *body = NULL, err[200] = "";
    size_t len = 0, nh = 0;
    ev_header hdrs[8];
    json_t *rm = json_pack("{s:s}", "ackId", "a");
    assert_int_equal(pubsub_pull_to_event(rm, "projects/p/subscriptions/s", &body, &len, hdrs, 8, &nh, err, sizeof err), -1);
    assert_non_null(strstr(err, "no 'message'"));
    json_decref(rm);
    rm = json_pack("{s:s,s:{s:s,s:{s:s}}}", "ackId", "a", "message", "data", "!!not base64", "attributes", "ce-type",
                   "google.cloud.dataflow.job.v1beta3.statusChanged");
    assert_int_equal(pubsub_pull_to_event(rm, "projects/p/subscriptions/s", &body, &len, hdrs, 8, &nh, err, sizeof err), -1);
    assert_non_null(strstr(err, "base64"));
    assert_null(body);
    json_decref(rm);
}

int main(void)
{
    log_set_level(LOG_NONE);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_endpoint),
        cmocka_unit_test(test_logsink_message),
        cmocka_unit_test(test_cloudevent_message),
        cmocka_unit_test(test_bad_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
