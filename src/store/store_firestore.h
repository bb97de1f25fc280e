/* store_firestore: what the Firestore backend's files share (store_firestore.c: the handle, HTTP, transactions,
 * reads, queries and commits; store_firestore_docs.c: document ids and typed values; store_firestore_ops.c: scripts,
 * runs, leases; store_firestore_steps.c: steps and the inbox; store_firestore_outbox.c: outbox and deadlines).
 * Uses: store_backend.h, jansson. Must not: be included by anything outside the store modules.
 *
 * Documents are handled as plain JSON objects (strings, integers, booleans; an absent key is "not set"), turned
 * into Firestore's typed fields only on the wire. Every operation is one "unit": its reads are recorded with the
 * update time they saw, its writes are buffered (one pending write per document), and the unit commits them in
 * one atomic commit whose preconditions say "unchanged since read" (updateTime) or "absent" (exists = false). A
 * unit that loses such a race runs again from its reads. Inside an explicit transaction (store_begin) the units add
 * to one buffer that store_commit sends (optimistic: no Firestore transaction, no server-side lock); reads see the
 * transaction's own pending writes. */
#ifndef SLUICE_STORE_FIRESTORE_H
#define SLUICE_STORE_FIRESTORE_H
#include <jansson.h>
#include <stdint.h>

#include "store_backend.h"

typedef struct fs_store fs_store;
/* A store handle of this backend (its struct store comes first). */
#define FS(s) ((fs_store *)(s))

/* Internal result of a commit whose precondition failed: the unit reruns (never returned to callers). */
#define FS_RERUN 1

/* ---- documents and values (store_firestore_docs.c) ---- */
/* A document id for `key` (any text): bytes outside [A-Za-z0-9-] become "_XX" (hex), so ids never contain '/',
 * never are "." or "..", and never look like "__x__". Caller frees. */
char *fs_id(const char *key);
/* fs_id(a) "~" fs_id(b): the id of a document keyed by two texts. Caller frees. */
char *fs_id2(const char *a, const char *b);
/* Plain JSON object -> Firestore "fields" object (new reference) and back (new reference). A plain integer becomes
 * integerValue, a string stringValue, true/false booleanValue; JSON null keys are left out. */
json_t *fs_fields_encode(const json_t *doc);
json_t *fs_fields_decode(const json_t *fields);
/* One typed value for a plain one (new reference). */
json_t *fs_value(const json_t *v);
/* Accessors on a plain document: a borrowed string or NULL, an integer or 0. */
const char *fs_str(const json_t *doc, const char *key);
int64_t fs_int(const json_t *doc, const char *key);
/* Sets key to a copy of text (NULL removes the key) / to an integer (0 removes it when `zero_unset`). */
void fs_set_str(json_t *doc, const char *key, const char *text);
void fs_set_int(json_t *doc, const char *key, int64_t v);
void fs_set_time(json_t *doc, const char *key, int64_t v); /* 0 removes the key */

/* ---- structured-query filters (store_firestore_docs.c); each returns a new reference ---- */
json_t *fs_where(const char *field, const char *op, json_t *plain_value); /* steals plain_value */
json_t *fs_and(json_t *a, json_t *b); /* steals both; either may be NULL */

/* ---- the core (store_firestore.c) ---- */
/* Starts a unit of work; fs_unit_end ends it. Implicit (no explicit transaction): a fresh read set and write
 * buffer, committed by fs_unit_end when rc is STORE_OK. Returns FS_RERUN from fs_unit_end when the commit lost a
 * race and the body must run again (bounded by busy_timeout_ms; then STORE_BUSY). */
void fs_unit_begin(fs_store *f);
int fs_unit_end(fs_store *f, int rc, char **err);
/* Runs `body` as a unit, rerunning it when the commit lost a race. */
#define FS_UNIT(f, rc, err, ...)                                                                            \
    do {                                                                                                     \
        do {                                                                                                 \
            fs_unit_begin(f);                                                                                \
            __VA_ARGS__;                                                                                     \
            (rc) = fs_unit_end((f), (rc), (err));                                                            \
        } while ((rc) == FS_RERUN);                                                                          \
    } while (0)

/* Reads coll/id. STORE_OK with *doc (new reference, plain, with "_id" = the document id) or STORE_NOTFOUND
 * (*doc NULL, no message). A document the unit wrote is read from its buffer. */
int fs_get(fs_store *f, const char *coll, const char *id, json_t **doc, char **err);
/* Buffers a full write of coll/id (steals doc; "_id" is ignored). Its precondition is what the unit read of it:
 * unchanged since (updateTime) or still absent; a document not read is written blindly. */
void fs_put(fs_store *f, const char *coll, const char *id, json_t *doc);
/* Buffers a create: the commit fails (and the unit reruns) when coll/id exists. */
void fs_create(fs_store *f, const char *coll, const char *id, json_t *doc);
/* Buffers a delete of coll/id (precondition as for fs_put). */
void fs_delete(fs_store *f, const char *coll, const char *id);
/* Buffers a write of coll/id (as fs_put; steals doc and `when`) that the commit makes only if it also writes a
 * document of when_coll whose fields include every field of `when` and did not when the unit read it (a lock taken
 * only by what it guards: a step that becomes launching, not one rewritten while launching). */
void fs_put_with(fs_store *f, const char *coll, const char *id, json_t *doc, const char *when_coll, json_t *when);
/* A query on one collection: `where` (stolen, may be NULL), ordered by order_field (NULL: none; desc), at most
 * `limit` (0: no limit) documents, starting after `after` (stolen, a JSON array of plain values matching the
 * order, or NULL). *docs: a new array of plain documents, with the unit's buffered writes of that collection laid
 * over (replaced, deleted, or appended at the end): callers re-check their condition and order. */
int fs_query(fs_store *f, const char *coll, json_t *where, const char *order_field, int desc, const char *order2,
             int limit, json_t *after, json_t **docs, char **err);
/* How many documents of coll match `where` (stolen): Firestore's count aggregation. */
int fs_count(fs_store *f, const char *coll, json_t *where, int64_t *count, char **err);
/* The handle's clock (store_now). */
int64_t fs_now(fs_store *f);
/* Backoff sleep inside a unit loop (used by store_firestore_ops.c for lock waits). */
void fs_pause_ms(int ms);

/* ---- the ops tables (store_firestore_ops.c, _steps.c) ---- */
void fs_ops_fill(struct store_ops *ops);
void fs_steps_fill(struct store_ops *ops);

#endif
