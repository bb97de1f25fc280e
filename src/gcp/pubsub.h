/* pubsub: what every Pub/Sub client of Sluice shares and what needs no network: where the REST API is (the
 * PUBSUB_EMULATOR_HOST rule), what a subscription name is, and how a pulled message becomes the event a push
 * would have delivered. Pure; used by pubsub_pull (ingress) and notify (the topic sink).
 * Uses: events (ev_header), util, jwt (base64), jansson. Must not: send requests or hold state. */
#ifndef SLUICE_PUBSUB_H
#define SLUICE_PUBSUB_H
#include <jansson.h>
#include <stddef.h>

#include "events.h"

#define PUBSUB_DEFAULT_URL "https://pubsub.googleapis.com"
#define PUBSUB_SCOPE "https://www.googleapis.com/auth/pubsub"

/* Where the REST API is and whether to send credentials, as Google's clients decide it: PUBSUB_EMULATOR_HOST
 * (host:port; `emulator_host`, may be NULL) wins and means plain HTTP without credentials; else `url`, else
 * PUBSUB_DEFAULT_URL. Returns the base URL (caller frees) and *no_auth. */
char *pubsub_pull_endpoint(const char *url, const char *emulator_host, int *no_auth);

/* Whether `name` is a full subscription name "projects/P/subscriptions/S" (P and S non-empty, no '/', no
 * whitespace, nothing to escape in a URL path). */
int pubsub_pull_valid_name(const char *name);

/* What ingress gets for one receivedMessage of a pull answer (`rm`, borrowed): a message carrying a CloudEvent
 * (a `ce-type` attribute, or `content-type: application/cloudevents+json`) becomes its data with the attributes
 * as headers, as an Eventarc delivery; any other becomes the wrapped push body
 * {"message", "subscription", "deliveryAttempt"?}, as the push of a log sink's LogEntry. Returns 0 with *body
 * (caller frees), *len and up to max_headers *headers (borrowed from rm), or -1 with err set. */
int pubsub_pull_to_event(json_t *rm, const char *subscription, char **body, size_t *len, ev_header *headers,
                         size_t max_headers, size_t *n_headers, char *err, size_t errlen);

#endif
