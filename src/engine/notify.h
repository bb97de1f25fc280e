/* notify: delivers the run events of the store's outbox (run_events.h) to their sinks — webhooks (a signed
 * structured-mode CloudEvent POST) and Pub/Sub topics (projects/P/topics/T:publish) — at least once, with the same
 * event id on every attempt, retrying with exponential backoff until the event is give_up_ms old. Several
 * processes may deliver from one store: each row is claimed with a lease. `sluice serve` runs it on a thread of its
 * own and in POST /v1/reconcile; `sluice run` runs a bounded pass before it exits.
 * Uses: store (outbox), http_client, gauth (Pub/Sub credentials), pubsub_pull (its endpoint rule), OpenSSL (HMAC,
 * base64), metrics, log, jansson. Must not: write events, or touch runs and steps. */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H
#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct notifier notifier;

typedef struct {
    const char *store_url;     /* the notifier opens a handle of its own on it (its thread may then run alone) */
    const char *secret;        /* the webhooks' HMAC-SHA256 key; NULL: events are sent unsigned */
    const char *pubsub_url;    /* NULL: https://pubsub.googleapis.com ($PUBSUB_EMULATOR_HOST wins, without auth) */
    const char *credentials;   /* Pub/Sub credentials file; NULL: static_token, else Application Default Credentials */
    const char *static_token;
    int no_auth;
    int64_t backoff_initial_ms; /* 0: 5 s, doubling */
    int64_t backoff_cap_ms;     /* 0: 15 min */
    int64_t give_up_ms;         /* 0: 24 h after the event */
    int64_t lease_ms;           /* a claim's time: 0 = 60 s (longer than any delivery's timeout) */
    int64_t timeout_ms;         /* one delivery: 0 = 20 s */
} notify_options;

/* The options' backoffs from $SLUICE_TEST_NOTIFY_BACKOFF="initial_ms,cap_ms,give_up_ms" (a test-only setting,
 * so tests need not wait hours); unchanged when unset or malformed. */
void notify_options_from_env(notify_options *o);
/* Declares the notifier's metric families (serve calls it once). */
void notify_declare_metrics(void);

/* NULL with *err (caller frees) when the store cannot be opened or the credentials cannot be set up. */
notifier *notify_new(const notify_options *o, char **err);
/* Stops the thread (if started) and frees. */
void notify_free(notifier *n);
/* One pass: claims due events, delivers them at once (concurrently), records each outcome; again while more are due
 * and budget_ms lasts. Returns the events settled or rescheduled, or -1 on a store failure. Thread-safe. */
int notify_pass(notifier *n, int budget_ms);
/* The earliest pending event's next attempt (unix ms; INT64_MAX: none), or -1 on a store failure. */
int64_t notify_next_due(notifier *n);
/* Runs passes on a thread of its own until notify_free: when events fall due, and at once after notify_wake. */
int notify_start(notifier *n);
void notify_wake(notifier *n);

/* "sha256=<hex HMAC-SHA256 of body under secret>" into out (cap >= 72). Returns out. */
char *notify_signature(const char *secret, const char *body, size_t len, char *out, size_t cap);
/* The Pub/Sub publish request body for `event_json`: {"messages":[{data: base64(event), attributes: ce-*,
 * orderingKey: subject}]}. Caller frees; NULL when the event is not a CloudEvent object. */
char *notify_pubsub_body(const char *event_json);

#endif
