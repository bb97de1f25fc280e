/* fuzz_cloudevent: Eventarc deliveries. The input as `sluice plan --event` reads a file (ev_decode_file_text:
 * an HTTP request dump whose headers come from the input, or a JSON body), then the same bytes as the body of a
 * binary-mode CloudEvent of each type Sluice handles (ce-* headers) and of a structured one
 * (application/cloudevents+json), all through ev_decode. */
#include "events.h"
#include "fuzz.h"

static void decode(const ev_header *h, size_t nh, const uint8_t *data, size_t size)
{
    ev_job_event ev;
    char err[256], id[512];
    if (ev_decode(h, nh, (const char *)data, size, &ev, err, sizeof err) == EV_OK) ev_identity(&ev, id, sizeof id);
    ev_job_event_free(&ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ev_header status_changed[] = {
        {"Content-Type", "application/json; charset=utf-8"},
        {"ce-id", "d20f9a8d4703f3a4313c1dde7c1b19ff"},
        {"ce-source", "//dataflow.googleapis.com/projects/my-project/locations/europe-west4"},
        {"ce-specversion", "1.0"},
        {"ce-type", "google.cloud.dataflow.job.v1beta3.statusChanged"},
    };
    static const ev_header published[] = {
        {"Content-Type", "application/json"},
        {"ce-id", "2070443601311540"},
        {"ce-source", "//pubsub.googleapis.com/projects/my-project/topics/dataflow-events"},
        {"ce-specversion", "1.0"},
        {"ce-type", "google.cloud.pubsub.topic.v1.messagePublished"},
    };
    static const ev_header structured[] = {{"Content-Type", "application/cloudevents+json; charset=utf-8"}};
    ev_job_event ev;
    char err[256], id[512];
    if (ev_decode_file_text((const char *)data, size, &ev, err, sizeof err) == EV_OK) ev_identity(&ev, id, sizeof id);
    ev_job_event_free(&ev);
    decode(status_changed, sizeof status_changed / sizeof status_changed[0], data, size);
    decode(published, sizeof published / sizeof published[0], data, size);
    decode(structured, 1, data, size);
    return 0;
}
