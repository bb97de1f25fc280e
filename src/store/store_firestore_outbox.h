/* store_firestore_outbox: the outbox and deadline operations of store.h on a Firestore handle
 * (store_firestore_outbox.c). store_outbox.c validates the arguments and calls these for a Firestore store.
 * Uses: store_backend.h. Must not: be included outside the store modules. */
#ifndef SLUICE_STORE_FIRESTORE_OUTBOX_H
#define SLUICE_STORE_FIRESTORE_OUTBOX_H
#include "store_backend.h"

int fs_outbox_put(store *s, const store_note *n, char **err);
int fs_outbox_count(store *s, const char *run_id, const char *type, int64_t *count, char **err);
int fs_outbox_claim(store *s, int64_t now, int64_t lease_ms, int limit, store_note_list *out, char **err);
int fs_outbox_finish(store *s, const char *id, const char *sink, int attempts, store_note_state next,
                     int64_t next_attempt_at, const char *error, char **err);
int fs_outbox_amend(store *s, const char *id, const char *sink, const char *event_json, int64_t next_attempt_at,
                    char **err);
int fs_outbox_list_run(store *s, const char *run_id, store_note_list *out, char **err);
int fs_outbox_next_due(store *s, int64_t *at, char **err);
int fs_deadline_arm(store *s, const char *run_id, const char *scope, int64_t due_at, char **err);
int fs_deadline_due(store *s, int64_t now, int limit, store_deadline_list *out, char **err);
int fs_deadline_settle(store *s, const char *run_id, const char *scope, int missed, char **err);
int fs_deadline_next_due(store *s, int64_t *at, char **err);

#endif
