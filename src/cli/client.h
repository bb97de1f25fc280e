/* client: `sluice start|status|cancel|redrive`: the command-line client of a running `sluice serve` (docs/api.md);
 * `status --store FILE` reads a local store instead.
 * Uses: http_client (blocking calls), store and views (read only), jansson. Must not: write to the store or run
 * the engine.
 * Exit status: 0 ok, 1 the server refused or could not be reached, 2 usage. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

/* What every client command's --help ends with: where the server and the token come from. */
#define CLIENT_USAGE_COMMON                                                                                         \
    "  --server URL   the server's base URL (default $SLUICE_SERVER)\n"                                              \
    "  --token T      the bearer token sent to the API (default $SLUICE_OPERATOR_TOKEN: serve's operator token,\n"  \
    "                 or a Google ID token of an identity serve allows with --api-allow-email)\n"                   \
    "  --json         print JSON (the API's shapes)\n"                                                             \
    "Exit status: 0 ok, 1 the server refused or could not be reached, 2 usage.\n"

#define CLIENT_START_USAGE                                                                                          \
    "usage: sluice start WORKFLOW [--param k=v]... [--request-key K] [--server URL] [--token T] [--json]\n"         \
    "Starts a run of WORKFLOW on a running sluice serve (POST /v1/runs).\n"                                       \
    "  --param k=v       a run parameter (repeatable)\n"                                                          \
    "  --request-key K   idempotency key: the same key with the same params returns the first run, with other\n" \
    "                    params it is refused (409)\n" CLIENT_USAGE_COMMON
#define CLIENT_STATUS_USAGE                                                                                         \
    "usage: sluice status [RUN] [--server URL] [--token T] [--json]\n"                                             \
    "       sluice status [RUN] --store FILE [--json]   (read a local store; no server needed)\n"                  \
    "Shows a run with its steps (and their errors), or the latest 20 runs.\n"                                     \
    "  --store FILE   read this existing store (a SQLite file or a PostgreSQL URL) instead of asking a server;\n" \
    "                 a store that does not exist is an error, none is created\n" CLIENT_USAGE_COMMON
#define CLIENT_CANCEL_USAGE                                                                                         \
    "usage: sluice cancel RUN [--server URL] [--token T] [--json]\n"                                               \
    "Cancels a run on a running sluice serve: its pending steps are cancelled, its jobs cancelled or drained.\n"  \
    CLIENT_USAGE_COMMON
#define CLIENT_REDRIVE_USAGE                                                                                        \
    "usage: sluice redrive RUN [--param k=v]... [--latest] [--server URL] [--token T] [--json]\n"                  \
    "Runs the failed, cancelled and never-started steps of a failed or cancelled run again (new attempts, new\n"  \
    "job names); its succeeded steps and their results stay. --param overrides run params; --latest moves the\n"  \
    "run to its workflow's current version (refused if that version lacks one of the run's steps).\n"            \
    CLIENT_USAGE_COMMON

int client_start_main(int argc, char **argv);
int client_status_main(int argc, char **argv);
int client_cancel_main(int argc, char **argv);
int client_redrive_main(int argc, char **argv);

#endif
