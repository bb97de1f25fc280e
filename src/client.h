/* client: `sluice start|status|cancel|redrive`: the command-line client of a running `sluice serve` (docs/api.md);
 * `status --store FILE` reads a local store instead.
 * Uses: http_client (blocking calls), store and views (read only), jansson. Must not: write to the store or run
 * the engine.
 * Exit status: 0 ok, 1 the server refused or could not be reached, 2 usage. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

int client_start_main(int argc, char **argv);
int client_status_main(int argc, char **argv);
int client_cancel_main(int argc, char **argv);
int client_redrive_main(int argc, char **argv);

#endif
