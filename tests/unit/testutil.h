/* testutil: helpers shared by the cmocka tests: temp dirs, file I/O, child processes, polling. */
#ifndef SLUICE_TESTUTIL_H
#define SLUICE_TESTUTIL_H
#include <stddef.h>
#include <sys/types.h>

/* Reads a whole file; caller frees. Returns NULL if it cannot be read. */
char *tu_read_file(const char *path, size_t *len);
/* Writes `text` to `path`; returns 0 or -1. */
int tu_write_file(const char *path, const char *text);
/* A fresh directory under $TMPDIR (or /tmp); caller frees the returned path. */
char *tu_tempdir(void);
/* Removes a directory tree (rm -rf). */
void tu_rmtree(const char *path);
/* $SLUICE_SRC/<rel>, $SLUICE_SHARED/<rel>: paths into the source tree and shared/ (static buffer per call site
 * is not used: caller frees). */
char *tu_src_path(const char *rel);
char *tu_shared_path(const char *rel);
/* Runs `argv` with stdout/stderr captured (each may be NULL); returns the exit status or -1. */
int tu_run(char *const argv[], char **out, char **err);
/* Polls `cond(arg)` every 10 ms until it returns non-zero or `timeout_ms` passes; returns the last value. */
int tu_poll(int (*cond)(void *), void *arg, int timeout_ms);

#endif
