/* testproc: child processes for the integration tests (tests/unit/testutil.h has the helpers that start none). */
#ifndef SLUICE_TESTPROC_H
#define SLUICE_TESTPROC_H

/* Runs `argv` with stdout/stderr captured (each may be NULL); returns the exit status or -1. */
int tu_run(char *const argv[], char **out, char **err);

#endif
