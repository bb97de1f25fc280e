/* ingress: the event endpoints of `sluice serve` — Pub/Sub push and Eventarc deliveries are authenticated,
 * decoded (events), filtered (only an end of a job of a loaded workflow is written), and recorded in the store
 * inbox by one writer thread that commits every queued event in one transaction (group commit) and only then
 * answers each request: a 2xx means "on disk", and one fsync covers many concurrent deliveries.
 * Uses: events, store, store_pool, wfset, serve_auth, engine_loop (wake, holds, adoptions), http_server,
 * metrics, log. Must not: touch the engine or parse bodies itself (events does). */
#ifndef SLUICE_INGRESS_H
#define SLUICE_INGRESS_H
#include "checkpointer.h"
#include "engine_loop.h"
#include "events.h"
#include "http_server.h"
#include "serve_auth.h"
#include "store_pool.h"
#include "wfset.h"

typedef struct ingress ingress;

typedef struct {
    store *writer;          /* the writer thread's handle (owned by the caller, outlives the ingress) */
    store_pool *reads;      /* for --adopt-foreign look-ups (borrowed) */
    wfset_box *workflows;   /* which jobs are relevant (borrowed) */
    const serve_auth *auth; /* borrowed */
    engine_loop *loop;      /* woken after a commit; holds and adoptions go there (borrowed; NULL: none) */
    int adopt_foreign;      /* a finished job of a first launch step no step knows starts a run */
    int process_ms;         /* > 0: hold each recorded event's answer until the engine acted on it, this long at most */
    checkpointer *ckpt;     /* the writer takes its checkpointer turn between batches (borrowed; NULL: none) */
    int writer_realtime;    /* try to run the writer thread in the real-time class (util_thread_realtime) */
} ingress_options;

ingress *ingress_new(const ingress_options *o);
/* Starts the writer thread. Returns 0 or -1. */
int ingress_start(ingress *g);
/* Commits what is queued, answers it, stops the writer and frees. */
void ingress_free(ingress *g);
int ingress_alive(ingress *g);

/* Handles one delivery (POST /v1/events/pubsub with source "pubsub", POST /v1/events/eventarc or / with
 * "eventarc"): answers it now (4xx, or 200 for an event that changes nothing) or after the group commit. */
void ingress_handle(ingress *g, hs_request *r, const char *source);

/* What became of an event handed in by ingress_submit. */
typedef enum {
    INGRESS_RECORDED = 0, /* durably in the store inbox (new, or a duplicate of one that is) */
    INGRESS_IGNORED,      /* well-formed but changes nothing: not about a job end of a loaded workflow */
    INGRESS_MALFORMED,    /* can never be recorded (unknown shape, refused by the store) */
    INGRESS_FAILED        /* could not be recorded now (a store error): offer it again later */
} ingress_outcome;

/* outcome_name: "recorded", "duplicate", "irrelevant", "foreign", "nonterminal", "malformed" or "store_error"
 * (static). Runs once, before ingress_submit returns or later on the writer thread. */
typedef void (*ingress_done_fn)(void *ud, ingress_outcome outcome, const char *outcome_name);

/* An event that came without an HTTP request (a pulled Pub/Sub message): decoded from `headers` (may be NULL/0)
 * and `body` as a push would be, filtered and group-committed with the pushes; `done` is told the outcome after
 * the commit. Counted in sluice_events_total under `source` (static). Not after ingress_free has begun. */
void ingress_submit(ingress *g, const ev_header *headers, size_t n_headers, const char *body, size_t len,
                    const char *source, ingress_done_fn done, void *ud);

#endif
