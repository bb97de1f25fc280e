/* serve_cmd: the `sluice serve` command: its flags and environment into serve_opts, then server's serve_open,
 * serve_run and serve_close.
 * Uses: server, config. Must not: build or wire the server's parts itself (server does). */
#ifndef SLUICE_SERVE_CMD_H
#define SLUICE_SERVE_CMD_H

/* The `sluice serve` command. Returns the process exit status (0 clean stop, 1 runtime error, 2 usage). */
int server_main(int argc, char **argv);

#endif
