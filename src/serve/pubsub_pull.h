/* pubsub_pull: Pub/Sub pull ingress for `sluice serve --subscription`: one thread pulls the subscriptions over the
 * REST API (`:pull`, `:acknowledge`, `:modifyAckDeadline`), hands each message to ingress (decoded and
 * group-committed exactly as a push), and acknowledges it only once ingress says it is recorded or changes
 * nothing; a message that could not be recorded is nacked (redelivered), one held long is leased on.
 * Uses: pubsub (the pure part), http_client (its own loop), gauth, retry, ingress, metrics, log, jansson.
 * Must not: decode events or touch the store itself (ingress does), or block ingress's writer thread. */
#ifndef SLUICE_PUBSUB_PULL_H
#define SLUICE_PUBSUB_PULL_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "ingress.h"
#include "pubsub.h"

typedef struct pubsub_pull pubsub_pull;


typedef struct {
    ingress *ing;                     /* where messages go (borrowed; outlives the puller) */
    const char *const *subscriptions; /* "projects/P/subscriptions/S" each (copied) */
    size_t n_subscriptions;
    const char *base_url;             /* NULL: PUBSUB_DEFAULT_URL; see pubsub_pull_endpoint */
    /* Credentials, as for Dataflow but with the Pub/Sub scope: none, a static token, a file, else ADC. */
    int no_auth;
    const char *static_token;
    const char *credentials;
    int max_messages;       /* messages held (pulled, not yet acknowledged or nacked) at most; 0: 1000 */
    size_t max_bytes;       /* their data at most; 0: 64 MiB */
    int batch;              /* maxMessages of one pull; 0: 500 */
    int64_t idle_max_ms;    /* the longest pause after pulls that came back empty at once; 0: 2 s */
    int64_t extend_after_ms; /* a message held this long gets its ack deadline extended; 0: 5 s */
    int ack_extension_s;    /* ... to this many seconds from then, again and again while held; 0: 30 */
    int fault_nack;         /* tests: nack this many first messages as if they could not be recorded */
    int fault_hold;         /* tests: hold this many first messages unanswered (never acked nor extended), as a
                               process stuck or killed with them would */
} pubsub_pull_options;

/* Validates the options and builds the client and credentials; no thread yet, no request sent. NULL with *err
 * (caller frees) on failure. */
pubsub_pull *pubsub_pull_new(const pubsub_pull_options *o, char **err);
/* Starts the pulling thread. Returns 0 or -1. */
int pubsub_pull_start(pubsub_pull *p);
/* Stops pulling at once; waits up to grace_ms for ingress to answer the messages held and acknowledges those,
 * nacks the rest (they are redelivered), and joins the thread. Ingress must still run. Idempotent. */
void pubsub_pull_stop(pubsub_pull *p, int grace_ms);
/* Stops (grace 0) if still running, and frees. NULL is a no-op. */
void pubsub_pull_free(pubsub_pull *p);

#endif
