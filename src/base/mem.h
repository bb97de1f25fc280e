/* mem: Sluice's one policy for running out of memory — a failed allocation ends the process at once, with a
 * message on stderr and SIGABRT (Redis's choice, not curl's). Every allocation in src/ goes through these (and
 * jansson's, once mem_install has run; util_printf formats and util_memstream writes under the same policy), so no
 * result is left unchecked and no caller writes its own recovery. tests/blackbox/test_layout.sh fails on a raw libc
 * allocator, asprintf or open_memstream.
 * Why: every change Sluice makes is committed to its store before it is acted on, and a process killed at any
 * moment is a path the tests run (kill -9 of serve and run, of replicas: integration.test_crash,
 * blackbox.test_serve_replicas_crash); the restart finishes what was in flight and launches nothing twice. An abort
 * on out-of-memory joins that path. Recovering at each of some four hundred call sites instead would be code no
 * test runs.
 * The one exception is the Lua allocator (lua_budget.c): there a refusal is how a script's memory budget is kept,
 * and Lua turns it into an error the script's caller sees.
 * Uses: libc, jansson. Must not: log through log.h (it allocates). */
#ifndef SLUICE_MEM_H
#define SLUICE_MEM_H
#include <stddef.h>

void *xmalloc(size_t n);
/* Zeroed; n * size must not overflow (an overflow is treated as out of memory). */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
/* A copy of s; NULL for NULL. */
char *xstrdup(const char *s);
/* A copy of at most n bytes of s, terminated; NULL for NULL. */
char *xstrndup(const char *s, size_t n);
/* Ends the process as a failed x-allocation does: for an allocation a library made and reported as NULL
 * (curl_easy_escape). n is the size asked for, when known (0 otherwise). */
__attribute__((noreturn)) void mem_out_of_memory(size_t n);
/* Makes jansson allocate through xmalloc too. Call once at start, before any thread (main does). */
void mem_install(void);

#endif
