/* testutil: helpers shared by the cmocka tests, unit and integration: temp dirs, file I/O, polling. None starts a
 * process (tests/unit holds only tests that start none); child processes are testproc.h's, in tests/integration. */
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
/* Removes a directory tree, as rm -rf does (in-process: nftw and remove). */
void tu_rmtree(const char *path);
/* $SLUICE_SRC/<rel>: a path into the source tree; caller frees. */
char *tu_src_path(const char *rel);
/* $SLUICE_SRC/tests/data/samples/<name>: a sample payload (tests/data/samples/make_samples.py); caller frees. */
char *tu_sample_path(const char *name);
/* `ms` scaled by $SLUICE_TEST_TIMEOUT_MULTIPLIER (a positive integer, default 1; as libuv's
 * UV_TEST_TIMEOUT_MULTIPLIER): every bound a test waits for scales with it on a slow or loaded machine. */
int tu_timeout_ms(int ms);
/* Polls `cond(arg)` every 10 ms until it returns non-zero or `timeout_ms` (scaled by tu_timeout_ms) passes;
 * returns the last value. */
int tu_poll(int (*cond)(void *), void *arg, int timeout_ms);

#endif
