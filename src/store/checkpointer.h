/* checkpointer: the thread of `sluice serve` that checkpoints the SQLite write-ahead log, so that no commit on
 * the acknowledgement path pays for it. The committing handles are opened with manual_checkpoint (store.h);
 * this thread has its own handle and runs a PASSIVE checkpoint every interval (it never blocks a writer).
 *
 * SQLite starts the log from its beginning only when a writer begins while every frame has been copied, and a
 * writer that commits continuously (the ingress writer under load) never lets another thread's checkpoint
 * catch up, so the log would grow without bound. Two brakes: when the log is longer than writer_frames, the
 * ingress writer itself runs a passive checkpoint between two batches (checkpointer_writer_turn: after it
 * answered one, before it begins the next), which has only the last few commits left to copy, so its next
 * begin restarts the log; when it is longer than restart_frames (readers kept it from restarting), this thread
 * runs a RESTART checkpoint, which holds up writers until the readers are done.
 * Uses: store, metrics, log, util. Must not: write rows, or run on a PostgreSQL store (nothing to do there). */
#ifndef SLUICE_CHECKPOINTER_H
#define SLUICE_CHECKPOINTER_H
#include <stdint.h>

#include "store.h"

typedef struct {
    int interval_ms;        /* between passive checkpoints; 0 = 100 */
    int64_t writer_frames;  /* a log at least this long is topped up by the writer; 0 = 4096 pages (16 MiB) */
    int64_t restart_frames; /* a log at least this long is reset by a RESTART checkpoint; 0 = 65536 pages */
} checkpointer_policy;

typedef enum {
    CHECKPOINT_NEXT_WAIT = 0, /* until the next interval */
    CHECKPOINT_NEXT_WRITER,   /* ask the writer for a passive checkpoint between its batches */
    CHECKPOINT_NEXT_RESTART,  /* a RESTART checkpoint now */
} checkpoint_next;

/* The policy with defaults filled in. */
checkpointer_policy checkpointer_policy_defaults(const checkpointer_policy *p);
/* What to do after a passive checkpoint that left `r` (the decision alone, for tests). */
checkpoint_next checkpointer_decide(const checkpointer_policy *p, const store_checkpoint_result *r);

typedef struct checkpointer checkpointer;

/* Opens its own handle on `url` (with `opts`, manual_checkpoint set) and starts the thread. NULL on failure,
 * with *err set (caller frees). */
checkpointer *checkpointer_start(const char *url, const store_options *opts, const checkpointer_policy *p,
                                 char **err);
/* Called by the writer thread on its own handle `writer` between two batches (no transaction open): runs a
 * passive checkpoint when the checkpointer asked for one. Returns 1 when it ran one, else 0. NULL c: 0. */
int checkpointer_writer_turn(checkpointer *c, store *writer);
/* Stops the thread (one last passive checkpoint first), closes the handle and frees. NULL is a no-op. */
void checkpointer_stop(checkpointer *c);

#endif
