/* store_migrate: `sluice store migrate`: copies a single-instance (SQLite) store into a shared (PostgreSQL) one.
 * Uses: store.h. Must not: be used by the engine or the server (it is an offline, operator-run tool). */
#ifndef SLUICE_STORE_MIGRATE_H
#define SLUICE_STORE_MIGRATE_H
#include <stdint.h>

#include "store.h"

#define STORE_CLI_USAGE                                                                                       \
    "usage: sluice store migrate --from FILE.db --to postgres://... [--force]\n"                               \
    "Copies a SQLite store into an empty PostgreSQL store, every row and column: scripts, runs (in flight\n"    \
    "included), steps, and inbox events processed or not with their dedupe keys and ids, in one transaction\n" \
    "on the target. Stop the engine (sluice serve / run) on the source first. The source's schema is brought\n" \
    "to the latest; the target's is created or migrated. --to takes a URL or libpq conninfo (see\n"           \
    "docs/store.md). A target that already holds rows is refused unless --force, which replaces its content.\n" \
    "Prints what was copied. Exit status: 0 copied, 1 runtime error (connection, non-empty target, copy\n"     \
    "failure: nothing was written), 2 usage or invalid input.\n"

typedef struct {
    int64_t scripts, runs, steps, events, events_unprocessed;
    int64_t runs_by_state[STORE_RUN_STATE_COUNT];
} store_migrate_counts;

/* Copies the SQLite store `from` (a path or "sqlite:PATH") into the PostgreSQL store `to`, in one transaction
 * on the target that holds its tables locked against writers (EXCLUSIVE). STORE_INVALID when `from` is not an
 * existing SQLite store or `to` not a PostgreSQL one; STORE_EXISTS when the target holds rows and `force` is 0
 * (with `force` they are deleted first, in the same transaction). `counts` (may be NULL) receives what was
 * copied. On failure nothing is written to the target. */
int store_migrate_copy(const char *from, const char *to, int force, store_migrate_counts *counts, char **err);

/* `sluice store SUBCOMMAND ...` (argv[0] is "store"). */
int store_cli_main(int argc, char **argv);

#endif
