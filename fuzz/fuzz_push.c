/* fuzz_push: a Pub/Sub push delivery as ingress hands it to events.c: the body through ev_decode once as a
 * wrapped push (no headers) and once as an unwrapped one (x-goog-pubsub-* headers, as Pub/Sub sends them with
 * "no wrapper"), then what ingress reads of a decoded event (identity, terminal state, launch-name shape). */
#include "events.h"
#include "fuzz.h"
#include "gcp_names.h"
#include "job_state.h"
#include "workflow.h"

static void use(const ev_job_event *ev)
{
    char buf[512], run[64];
    int attempt;
    ev_identity(ev, buf, sizeof buf);
    (void)js_name_terminal(ev->state);
    if (ev->job_name) (void)wf_parse_launch_name(ev->job_name, run, sizeof run, &attempt);
    if (ev->job_name) (void)gn_job_name_valid(ev->job_name);
}

static void decode(const ev_header *h, size_t nh, const uint8_t *data, size_t size)
{
    ev_job_event ev;
    char err[256];
    if (ev_decode(h, nh, (const char *)data, size, &ev, err, sizeof err) == EV_OK) use(&ev);
    ev_job_event_free(&ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ev_header unwrapped[] = {
        {"Content-Type", "application/json"},
        {"x-goog-pubsub-subscription-name", "projects/p/subscriptions/s"},
        {"x-goog-pubsub-message-id", "2070443601311540"},
        {"x-goog-pubsub-publish-time", "2020-12-04T03:08:02.101Z"},
    };
    decode(NULL, 0, data, size);
    decode(unwrapped, sizeof unwrapped / sizeof unwrapped[0], data, size);
    return 0;
}
