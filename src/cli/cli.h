/* cli: argument parsing and the sluice commands (validate, plan, graph, run, emulator, ...).
 * Uses: every subsystem through its public header. Must not: be called by any other subsystem.
 * Exit codes: 0 ok, 1 runtime error, 2 usage error or invalid input. */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

int cli_main(int argc, char **argv);

#endif
