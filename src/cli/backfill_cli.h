/* backfill_cli: `sluice backfill WORKFLOW --from T --to T [--dry-run] [--max-active K] [--rerun none|failed|all]`,
 * a client of a running `sluice serve` (POST /v1/backfills, docs/api.md), found as the other client commands find
 * it (--server or $SLUICE_SERVER, --token or $SLUICE_OPERATOR_TOKEN).
 * Uses: http_client (blocking call), jansson. Must not: touch a store. */
#ifndef SLUICE_BACKFILL_CLI_H
#define SLUICE_BACKFILL_CLI_H

#include "client.h"

#define BACKFILL_USAGE                                                                                               \
    "usage: sluice backfill WORKFLOW --from T --to T [--dry-run] [--max-active K] [--rerun none|failed|all]\n"       \
    "                       [--param k=v]... [--server URL] [--token T] [--json]\n"                                  \
    "Starts one run of WORKFLOW per schedule time in [from, to] (per day, midnight UTC, without a schedule), each\n" \
    "with its logical time. A time that has a run already gets no second one. T is a date (YYYY-MM-DD: midnight in\n"\
    "the schedule's zone; for --to, the end of that day) or an RFC 3339 time.\n"                                   \
    "  --dry-run        list the logical times that would start (one per line) and start nothing\n"                 \
    "  --max-active K   at most K of the backfill's runs at once (default: no limit)\n"                             \
    "  --rerun M        none (default): leave times with a run alone; failed: redrive their failed or cancelled\n"  \
    "                   runs; all: also start a new run where the run succeeded\n" CLIENT_USAGE_COMMON

int backfill_cli_main(int argc, char **argv);

#endif
