/* engine_notes: a Dataflow call that keeps failing is shown on its step while the step is in flight: the reason of
 * each failed attempt (told by the jobs_api's retry hook while it retries) and of each failed call the engine will
 * retry later, kept as the step's note (store_step_set_note: its `error` while in flight), cleared by the next
 * answer. So `sluice status`, the API and the UI say "retrying: connection refused (3 failed attempts)" instead of
 * a silent "launching".
 * Uses: engine_internal (the ops in flight), store, jobs_api, util. Must not: decide anything about a step; it only
 * records why a call failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "util.h"

/* A note is one line of a status: Google's message with its violations can be long. */
#define NOTE_MAX 1000

/* The jobs_api's retry hook (from poll, between ticks): kept on the op until the next tick records it. `ud` is
 * the op (its engine is NULL once the engine was freed: then nothing is kept). */
static void on_retry(void *hook_ud, void *ud, const char *reason, int failures, int64_t delay_ms)
{
    (void)hook_ud; /* may be a freed engine: the op says whether its engine is alive */
    eng_op *op = ud;
    if (op == NULL || op->e == NULL) return;
    char *note = util_printf("retrying: %.*s (%d failed attempt%s; next in %.1f s)", NOTE_MAX, reason ? reason : "?",
                             failures, failures == 1 ? "" : "s", (double)delay_ms / 1000.0);
    free(op->note);
    op->note = note;
    op->note_dirty = 1;
}

void eng_notes_install(engine *e)
{
    e->o.api->on_retry = on_retry;
    e->o.api->on_retry_ud = e;
}

static void flush_list(engine *e, eng_op *op, int sent)
{
    for (; op != NULL; op = sent ? op->sent_next : op->next) {
        if (!op->note_dirty) continue;
        op->note_dirty = 0;
        /* CONFLICT: the step moved on meanwhile (finished, a new attempt): the note is stale, nothing to show. */
        eng_w(e, store_step_set_note(e->o.st, op->run_id, op->step, op->attempt, op->note, NULL));
    }
}

void eng_notes_flush(engine *e)
{
    flush_list(e, e->sent, 1);
    flush_list(e, e->done, 0);
}

void eng_note_answer(engine *e, const eng_op *op, const store_step *st)
{
    const ja_result *r = &op->res;
    if (op->kind == OP_MESSAGES) return;
    if (r->outcome == JA_OK || r->outcome == JA_NOT_FOUND) {
        if (st->error != NULL) store_step_set_note(e->o.st, st->run_id, st->name, st->attempt, NULL, NULL);
        return;
    }
    if (r->outcome == JA_REJECTED && (op->kind == OP_LAUNCH || op->kind == OP_STOP)) return; /* decided on */
    if (r->outcome == JA_QUOTA && op->kind == OP_LAUNCH) return; /* the step waits, with its own note */
    const char *what = op->kind == OP_LAUNCH ? "launch unsettled (the job name is looked up next)"
                       : op->kind == OP_FIND ? "looking the job name up failed"
                       : op->kind == OP_GET  ? "checking the job failed"
                                             : "stopping the job failed";
    char *note = util_printf("retrying: %s: %.*s (%d failed call%s)", what, NOTE_MAX,
                             r->message ? r->message : "no answer", st->check_failures + 1,
                             st->check_failures == 0 ? "" : "s");
    eng_w(e, store_step_set_note(e->o.st, st->run_id, st->name, st->attempt, note, NULL));
    free(note);
}
